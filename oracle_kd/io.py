"""Files are written atomically (temporary file in the same folder, then rename);
a unit of work is claimed with a lock file, so that processes can share one output folder.

A write that fails (a full disk, a killed process) leaves the old file, or none, and
never a partial one; a full disk is an InputError saying which write failed, how much
it needed and how much is free."""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path


class InputError(Exception):
    """Bad user input: the CLI prints the message on one line and exits non-zero."""


FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device, disk quota exceeded


@contextmanager
def atomic_path(path: str | Path, size: int | None = None):
    """Yield a temporary path beside `path`; rename it over `path` if the block succeeds.
    `size`: the bytes the block will write, when known, for the message of a full disk."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if e.errno in FULL:
            raise disk_full(path, size, 0) from None
        raise InputError(f"cannot write {path} ({e.strerror or e})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        written = _size(tmp)
        Path(tmp).unlink(missing_ok=True)
        if e.errno in FULL:
            raise disk_full(path, size, written) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DiskFull(InputError):
    """A write failed for lack of space; nothing partial was left behind."""


def disk_full(path: Path, size: int | None, written: int) -> DiskFull:
    """The one-line message of a full disk: which write, what it needed, what is free."""
    need = f"it needs {size:,} bytes" if size else f"it needs more than the {written:,} bytes written"
    try:
        stats = os.statvfs(path.parent)
        free = f"{stats.f_bavail * stats.f_frsize:,} bytes free there"
    except OSError:
        free = "free space unknown"
    return DiskFull(f"writing {path} failed: no space left on the device ({need}; {free}); "
                    "nothing was changed, free some space and run the same command again")


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    data = text.encode()
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


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
