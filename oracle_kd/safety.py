"""Reading what a user names, within bounds: regular files only, reads capped by
the file's real size, and (when asked) paths confined to one folder.

A FIFO would block a read forever and /dev/zero would fill memory; both are
refused for what they are (the `fstat` of the opened descriptor, so a path
swapped between a check and the read changes nothing) before a byte is read.
The descriptor is opened non-blocking, so opening a FIFO does not wait for a
writer either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from oracle_kd.io import InputError

MAX_FILE_BYTES = 1 << 30  # 1 GiB: far above any image, audio clip, manifest or transcript file a data set holds


NOT_FOUND, FOLDER = "file not found", "a folder, not a file"  # BadFile reasons callers word their own way


class BadFile(InputError):
    """A named file that cannot be read as data. `reason` says why without the path
    (per-example skips put the path last); str() is `path: reason`."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def open_regular(path: str | Path, limit: int = MAX_FILE_BYTES):
    """(binary file object, size in bytes) of a regular file of at most `limit` bytes;
    BadFile naming what the path is instead (missing, a folder, a FIFO, a device, too big)."""
    name = os.fspath(path)
    if "\0" in name:
        raise BadFile(path, "the path holds a NUL byte")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadFile(path, NOT_FOUND) from None
    except OSError as e:
        raise BadFile(path, f"cannot open it ({e.strerror or e})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise BadFile(path, FOLDER)
        if not stat.S_ISREG(info.st_mode):
            raise BadFile(path, f"not a regular file: {file_kind(info.st_mode)}")
        if info.st_size > limit:
            raise BadFile(path, f"{info.st_size:,} bytes, more than the limit of {limit:,}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | Path, what: str) -> None:
    """InputError "`what` not found: path" or "`what` path: reason" unless `path` is a regular
    file (opened and closed, no byte read): for files a library opens by name later."""
    try:
        f, _ = open_regular(path, limit=1 << 62)
    except BadFile as e:
        raise InputError(f"{what} not found: {path}" if e.reason == NOT_FOUND else f"{what} {e}") from None
    f.close()


def read_bytes(path: str | Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file (see `open_regular`); never more than its size when opened."""
    f, size = open_regular(path, limit)
    with f:
        try:
            return f.read(size)
        except OSError as e:
            raise BadFile(path, f"cannot read it ({e.strerror or e})") from None


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file"


def confine(path: str | Path, root: str | Path | None) -> str | None:
    """None when `path` (symbolic links resolved) lies inside the folder `root`, or when
    there is no root; else the reason it may not be read."""
    if root is None:
        return None
    if "\0" in os.fspath(path):
        return "the path holds a NUL byte"
    real, top = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if real == top or top in real.parents:
        return None
    return f"outside --data-root {root}"


def check_writable_folder(folder: str | Path, what: str) -> None:
    """InputError naming `what` (an option and its value) unless files can be created in `folder`
    (made if missing). Commands call it before any work, not after an hour of training."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise InputError(f"{what}: cannot write in {folder} ({e.strerror or e})") from None
