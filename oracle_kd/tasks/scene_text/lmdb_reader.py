"""Reading a user's LMDB without trusting its pages and without holding them.

LMDB memory-maps its file. Two consequences shape this module:
- A damaged data.mdb makes LMDB read past the end of its map, and the process dies
  of SIGBUS or SIGSEGV, which no `except` can catch. `check_pages` has a child
  process walk every key and value first; a crash there refuses the database.
- Every page a read touches stays in the reader's resident set until the map is
  closed. Over an epoch that is the whole file, in every process that reads it.
  The kernel could drop those pages, but the figures users watch (and limits
  such as cgroups' memory accounting) count them, so readers here close and
  reopen the map once their reads may have mapped in REOPEN_BYTES.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lmdb

from oracle_kd.io import InputError

REOPEN_BYTES = 32 << 20  # bytes mapped in by reads (see READ_COST) before the map is closed and reopened
# Linux maps up to 16 neighbouring pages on each page fault of a file mapping when they are in the page
# cache ("fault-around", 64 KiB by default), and a read faults on its key's leaf page and on its value's
# pages, which lie apart: a read in random order can add this much to the resident set, besides its value.
READ_COST = 2 * (64 << 10)

# The walk reopens the map as readers do, so that the checking process's resident
# set stays bounded too; it resumes at the first key after the last one walked.
_WALK = """
import sys, lmdb
folder, window, after = sys.argv[1], int(sys.argv[2]), None
while True:
    env = lmdb.open(folder, readonly=True, lock=False, readahead=False, meminit=False)
    walked = 0
    with env.begin() as txn:
        cursor = txn.cursor()
        more = cursor.set_range(after) if after is not None else cursor.first()
        if more and after is not None and cursor.key() == after:
            more = cursor.next()
        while more and walked < window:
            key, value = cursor.item()
            walked += len(key) + len(value) + 4096  # in key order: neighbouring pages are this walk's next ones
            after = key
            more = cursor.next()
    env.close()
    if not more:
        break
"""


def check_pages(folder: Path) -> None:
    """InputError unless a child process can read every key and value of the LMDB in `folder`."""
    done = subprocess.run([sys.executable, "-c", _WALK, str(folder), str(REOPEN_BYTES)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise InputError(f"LMDB {folder} is damaged: reading its pages crashed a checking process ({name})")


def open_env(folder: Path) -> lmdb.Environment:
    return lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False)


class LmdbReader:
    """Values of a read-only LMDB (pages checked by `check_pages`), read one key at a time.

    The map is opened in the process that reads (an LMDB environment must not be
    used across a fork: loader workers open their own) and reopened every
    REOPEN_BYTES. Pickled, it carries only the folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._env, self._pid, self._since_open = None, None, 0

    def get(self, key: bytes) -> bytes | None:
        if self._env is None or self._pid != os.getpid() or self._since_open > REOPEN_BYTES:
            self.close()
            self._env, self._pid, self._since_open = open_env(self.folder), os.getpid(), 0
        with self._env.begin() as txn:
            value = txn.get(key)
        self._since_open += READ_COST + (len(value) if value is not None else 0)
        return value

    def close(self) -> None:
        if self._env is not None and self._pid == os.getpid():  # an inherited one belongs to the parent
            self._env.close()
        self._env = None

    def __getstate__(self):
        return {"folder": self.folder}

    def __setstate__(self, state):
        self.__init__(state["folder"])
