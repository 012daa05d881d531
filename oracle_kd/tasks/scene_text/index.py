"""What is known of a user's scene-text data set before its pixels are read, and
reading one example's image when it is asked for (in a data-loader worker).

`formats.index_examples` builds an `ImageIndex`; `ImageIndex.load(i)` reads,
checks and decodes one image. The reasons it gives are those `formats`
documents for images (missing, empty, unreadable), with the same wording.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np

from oracle_kd.lazy import Strings
from oracle_kd.safety import FOLDER, NOT_FOUND, BadFile, read_bytes
from oracle_kd.tasks.scene_text.images import decode_image_bytes
from oracle_kd.tasks.scene_text.lmdb_reader import LmdbReader


class ImageIndex:
    """For each example: where its image is (a file path, or an LMDB key number), its
    normalized label and its line or key number. Columns are numpy arrays and
    `lazy.Strings`, which forked loader workers share with the process that built them."""

    def __init__(self, kind: str, folder: Path, images: Strings | None, numbers, labels: Strings, total: int):
        self.kind, self.folder = kind, folder  # "labels-tsv" or "lmdb"; the labels.tsv file or the LMDB folder
        self.images = images  # labels-tsv: image paths; lmdb: None (the key is image-<number>)
        self.numbers = np.asarray(numbers, dtype=np.int64)  # labels-tsv: 1-based line; lmdb: key number
        self.labels, self.total = labels, total  # total: lines or num-samples, skipped ones included
        self.skipped = 0  # examples skipped while indexing
        self.reader = LmdbReader(folder) if kind == "lmdb" else None

    def __len__(self):
        return len(self.numbers)

    def source(self, i: int) -> str:
        """How skips name example `i`: "dir/labels.tsv:17" or "dir:image-000000017"."""
        if self.kind == "lmdb":
            return f"{self.folder}:image-{self.numbers[i]:09d}"
        return f"{self.folder}:{self.numbers[i]}"

    def select(self, rows) -> "ImageIndex":
        """The examples at `rows` (positions in this index), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        images = None if self.images is None else self.images.take(rows)
        chosen = ImageIndex(self.kind, self.folder, images, self.numbers[rows], self.labels.take(rows), self.total)
        chosen.skipped = self.skipped
        return chosen

    def load(self, i: int) -> tuple[np.ndarray | None, str | None]:
        """(model image, None), or (None, the reason example `i` cannot be used)."""
        if self.kind == "labels-tsv":
            return read_image_file(Path(self.images[i]))
        key = f"image-{self.numbers[i]:09d}"
        try:
            data = self.reader.get(key.encode())
        except lmdb.Error as e:
            return None, f"cannot read key {key} ({e})"
        if data is None:
            return None, f"key {key} is missing"
        return decode(data)


def read_image_file(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(model image, None) of an image file, or (None, the reason, ending with the path)."""
    try:
        data = read_bytes(path)
    except BadFile as e:  # indexing found it, but a file can change after that
        return None, file_problem(e, path)
    image, problem = decode(data)
    return image, (f"{problem}: {path}" if problem else None)


def file_problem(e: BadFile, path: Path) -> str:
    """The skip reason of an image file that cannot be opened."""
    if e.reason == NOT_FOUND:
        return f"image file not found: {path}"
    if e.reason == FOLDER:
        return f"image path is a folder, not a file: {path}"
    return f"cannot read image ({e.reason}): {path}"


def decode(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """(model image, None) of encoded image bytes, or (None, the reason)."""
    if not data:
        return None, "image is empty (0 bytes)"
    try:
        return decode_image_bytes(data), None
    except ValueError as e:
        return None, str(e)
