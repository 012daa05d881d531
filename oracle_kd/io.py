"""Files are written atomically (temporary file in the same folder, then rename);
a unit of work is claimed with a lock file, so that processes can share one output folder."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it over `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class InputError(Exception):
    """Bad user input: the CLI prints the message on one line and exits non-zero."""


class Busy(Exception):
    """Another process holds the lock (see `claim`)."""


@contextmanager
def claim(lock: str | Path, wait: bool = False):
    """Hold an exclusive lock on the file `lock` for the block, or raise Busy (wait for it when `wait`).

    An advisory flock: the kernel drops it when the process ends however it ends
    (a killed run leaves no stale lock), and it holds across machines on a file
    system with working locks (NFS, Lustre with flock). The file names its holder.
    """
    import fcntl  # POSIX only, so imported where it is used

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise Busy(f"{lock.parent} (held by {holder})") from None
        f.seek(0)
        f.truncate()
        f.write(f"{socket.gethostname()} pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes (read in chunks: checkpoints can be large)."""
    import hashlib

    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
