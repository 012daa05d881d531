"""The two user data formats of scene text recognition: labels.tsv folders and LMDB.

labels-tsv: a folder holding `labels.tsv`, one `image/path<TAB>label` per line,
paths relative to the folder. No header line. A UTF-8 BOM, blank lines and
Windows line endings are tolerated; one trailing tab is too.

lmdb: the layout of clovaai/deep-text-recognition-benchmark (and CRNN before
it): a folder holding `data.mdb` with keys `num-samples` (ASCII integer),
`image-%09d` (encoded PNG/JPEG bytes) and `label-%09d` (UTF-8), 1-based.

Labels follow the field's standard protocol (`normalize_label`): case is
ignored and everything that is not a letter or digit -- ASCII or Unicode
punctuation, symbols, spaces -- is removed, so "Don't" is read as "dont".
A label holding letters, digits or combining marks outside ASCII ("café",
"日本", "２") is skipped, not changed: removing the "é" would teach the model a
wrong word. The check runs after Unicode NFC composition, so a decomposed "é"
is caught too.

Reading is in two steps. `index_examples` reads the labels and checks them,
and that each image file exists (or, in an LMDB, that every page can be read),
without decoding a pixel; `ImageIndex.load(i)` reads and checks one image, in
whichever process (a data-loader worker) asks for it. `read_examples` does
both for every example, in order.

Every example that cannot be used is skipped with one `skips.add(source,
reason)` and reading goes on. `source` names the file and 1-based line
("data/labels.tsv:17") or the LMDB key ("data/lmdb:image-000000017", or
"...:label-000000017" when the label is at fault). Checks run in this order,
and the first failure is the reason: malformed line, empty label, characters
outside the label set, nothing left after normalization, longer than
`max_label_length`, then the image (missing, empty, unreadable).
"""

from __future__ import annotations

import io
import os
from array import array
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image

from oracle_kd.io import InputError, atomic_path
from oracle_kd.lazy import Strings
from oracle_kd.safety import BadFile, confine, open_regular, read_bytes
from oracle_kd.skips import SkipLog, require_usable
from oracle_kd.tasks.scene_text.images import normalize_label
from oracle_kd.tasks.scene_text.index import ImageIndex, file_problem
from oracle_kd.tasks.scene_text.lmdb_reader import LmdbReader, check_pages, open_env

LABELS_FILE = "labels.tsv"
LMDB_FILE = "data.mdb"


@dataclass
class TextImageExample:
    image: np.ndarray  # uint8 (IMAGE_HEIGHT, IMAGE_WIDTH), see images.to_model_image
    label: str  # normalize_label(raw label): lowercase ASCII letters and digits
    source: str  # "dir/labels.tsv:17" or "dir:image-000000017"


def detect_format(path: str | Path) -> str:
    """"labels-tsv" or "lmdb"; raises InputError naming what was expected."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"data path not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".tsv":
            return "labels-tsv"
        if path.name == LMDB_FILE:
            return "lmdb"
        raise InputError(
            f"{path} is a file; give a folder with {LABELS_FILE}, an LMDB folder "
            f"(holding {LMDB_FILE}), or a {LABELS_FILE} file"
        )
    has_tsv, has_lmdb = (path / LABELS_FILE).is_file(), (path / LMDB_FILE).is_file()
    if has_tsv and has_lmdb:
        raise InputError(f"{path} holds both {LABELS_FILE} and {LMDB_FILE}: give the file to read")
    if has_tsv:
        return "labels-tsv"
    if has_lmdb:
        return "lmdb"
    inside = sorted(str(p.parent) for p in path.glob(f"*/{LMDB_FILE}"))
    inside += sorted(str(p.parent) for p in path.glob(f"*/{LABELS_FILE}"))
    hint = f"; data sets inside it: {', '.join(inside[:3])}" if inside else ""
    raise InputError(
        f"{path} is neither a folder with {LABELS_FILE} (image path<TAB>label per "
        f"line) nor an LMDB folder holding {LMDB_FILE}{hint}"
    )


def read_examples(
    path: str | Path, skips: SkipLog, max_label_length: int | None = None, data_root: str | Path | None = None
) -> list[TextImageExample]:
    """All usable examples of a labels.tsv folder (or file) or an LMDB folder, in order,
    their images decoded (`index_examples`, then `ImageIndex.load` of each).

    Raises InputError if the data set is missing or unreadable as a whole, or if
    it has no usable example; single bad examples are reported to `skips`. With
    `data_root`, the data set and every image a labels.tsv names must lie inside
    that folder (symbolic links resolved); an image outside it is skipped.
    """
    index = index_examples(path, skips, max_label_length, data_root)
    skipped_before, examples = len(skips), []
    for i in range(len(index)):
        image, problem = index.load(i)
        if problem:
            skips.add(index.source(i), problem)
        else:
            examples.append(TextImageExample(image, index.labels[i], index.source(i)))
    return require_usable(examples, index.total, path, index.skipped + len(skips) - skipped_before, "examples")


def index_examples(
    path: str | Path, skips: SkipLog, max_label_length: int | None = None, data_root: str | Path | None = None
) -> ImageIndex:
    """The examples of a labels.tsv folder (or file) or an LMDB folder whose line and
    label are usable and whose image file exists, in order; no image is decoded.
    Errors and skips as `read_examples`, except those only decoding finds."""
    path = Path(path)
    outside = confine(path, data_root)
    if outside:
        raise InputError(f"data path {path} is {outside}")
    kind = detect_format(path)
    skipped_before = len(skips)
    if kind == "labels-tsv":
        tsv = path if path.is_file() else path / LABELS_FILE
        index = _index_labels_tsv(tsv, skips, max_label_length, data_root)
    else:
        index = _index_lmdb(path.parent if path.is_file() else path, skips, max_label_length)
    index.skipped = len(skips) - skipped_before
    require_usable(range(len(index)), index.total, path, index.skipped, "examples")
    return index


def write_labels_tsv(out_dir: str | Path, images: list, labels: list[str]) -> Path:
    """Write images as `images/000000001.png`, ... and `labels.tsv`; returns `out_dir`.

    `images` are PIL images or uint8 arrays (H, W) or (H, W, 3), saved at their
    own size. Labels are written as given (readers normalize them); labels.tsv
    is written last, atomically.
    """
    out_dir = Path(out_dir)
    _check_lengths(images, labels)
    for i, label in enumerate(labels, start=1):
        if any(c in label for c in "\t\n\r"):
            raise InputError(f"label {i} contains a tab or line break: {label!r}")
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (image, label) in enumerate(zip(images, labels), start=1):
        rel = f"images/{i:09d}.png"
        (out_dir / rel).write_bytes(_png_bytes(image))
        lines.append(f"{rel}\t{label}\n")
    with atomic_path(out_dir / LABELS_FILE) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8", newline="\n")
    return out_dir


def write_lmdb(out_dir: str | Path, images: list, labels: list[str]) -> Path:
    """Write an LMDB in the benchmark layout (PNG-encoded images); returns `out_dir`.

    The database is built in a temporary folder beside `out_dir` and its
    data.mdb moved into place, so readers never see a half-written one.
    """
    out_dir = Path(out_dir)
    _check_lengths(images, labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoded = [_png_bytes(image) for image in images]
    # map_size is an upper bound on the file size; B-tree pages and keys need
    # some room beyond the values themselves.
    map_size = 2 * sum(len(b) + 4096 for b in encoded) + (16 << 20)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        env = lmdb.open(str(tmp), map_size=map_size, subdir=True, lock=False)
        with env.begin(write=True) as txn:
            for i, (data, label) in enumerate(zip(encoded, labels), start=1):
                txn.put(b"image-%09d" % i, data)
                txn.put(b"label-%09d" % i, label.encode("utf-8"))
            txn.put(b"num-samples", str(len(encoded)).encode("ascii"))
        env.close()
        os.replace(tmp / LMDB_FILE, out_dir / LMDB_FILE)
        (out_dir / "lock.mdb").unlink(missing_ok=True)  # belonged to any old data.mdb
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# --- readers -----------------------------------------------------------------


def _index_labels_tsv(tsv: Path, skips: SkipLog, max_len: int | None, data_root=None) -> ImageIndex:
    """The index of one labels.tsv: every line whose syntax, label and image file are usable."""
    folder = tsv.parent
    try:
        raw = read_bytes(tsv)
    except BadFile as e:
        raise InputError(f"cannot read {tsv}: {e.reason}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    paths, lines, labels, total = Strings(), array("q"), Strings(), 0
    # Split on "\n" only: str.splitlines would also break at characters such
    # as U+2028 or \x1c that may sit inside a label.
    for lineno, line_bytes in enumerate(raw.split(b"\n"), start=1):
        source = f"{tsv}:{lineno}"
        try:
            line = line_bytes.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            total += 1
            skips.add(source, "line is not valid UTF-8 text")
            continue
        if not line.strip():
            continue
        total += 1
        parts = line.split("\t")
        if len(parts) == 1:
            skips.add(source, "malformed line: no tab between image path and label")
            continue
        if len(parts) > 2 and any(p.strip() for p in parts[2:]):
            skips.add(
                source,
                f"malformed line: {len(parts) - 1} tabs, expected one between "
                f"image path and label",
            )
            continue
        rel, raw_label = parts[0].strip(), parts[1]
        if not rel:
            skips.add(source, "malformed line: empty image path")
            continue
        label, problem = _check_label(raw_label, max_len)
        if problem:
            skips.add(source, problem)
            continue
        image_path, problem = _find_image_file(folder, rel, data_root)
        if problem:
            skips.add(source, problem)
            continue
        paths.append(str(image_path))
        lines.append(lineno)
        labels.append(label)
    return ImageIndex("labels-tsv", tsv, paths, lines, labels, total)


def _index_lmdb(folder: Path, skips: SkipLog, max_len: int | None) -> ImageIndex:
    """The index of one LMDB folder in the benchmark layout: every key number whose label
    is usable (images are looked up when read)."""
    check_pages(folder)
    try:
        env = open_env(folder)
    except lmdb.Error as e:
        raise InputError(f"cannot open LMDB {folder}: {e}") from None
    try:
        with env.begin(write=False) as txn:
            value = txn.get(b"num-samples")
            if value is None:
                raise InputError(
                    f"LMDB {folder} has no 'num-samples' key; expected the "
                    f"deep-text-recognition-benchmark layout (num-samples, "
                    f"image-%09d, label-%09d)"
                )
            if not value.strip().isdigit() or len(value.strip()) > 18:
                raise InputError(f"LMDB {folder}: num-samples is not a number: {value[:40]!r}")
            total, entries = int(value), env.stat()["entries"]
        if total > entries:  # reading would loop over keys that cannot exist
            raise InputError(f"LMDB {folder}: num-samples says {total:,}, but the database holds only "
                             f"{entries:,} keys")
    except lmdb.Error as e:
        raise InputError(f"cannot read LMDB {folder}: {e}") from None
    finally:
        env.close()
    reader, numbers, labels = LmdbReader(folder), array("q"), Strings()
    try:
        for i in range(1, total + 1):
            label = _lmdb_label(reader, folder, i, skips, max_len)
            if label is not None:
                numbers.append(i)
                labels.append(label)
    except lmdb.Error as e:
        raise InputError(f"cannot read LMDB {folder}: {e}") from None
    finally:
        reader.close()
    return ImageIndex("lmdb", folder, None, numbers, labels, total)


def _lmdb_label(reader: LmdbReader, folder: Path, i: int, skips: SkipLog, max_len: int | None) -> str | None:
    """The normalized label of key number `i`, or None (and a skip naming the label key)."""
    label_key = f"label-{i:09d}"
    label_source = f"{folder}:{label_key}"
    label_bytes = reader.get(label_key.encode())
    if label_bytes is None:
        skips.add(label_source, f"key {label_key} is missing")
        return None
    try:
        raw_label = label_bytes.decode("utf-8")
    except UnicodeDecodeError:
        skips.add(label_source, "label is not valid UTF-8 text")
        return None
    label, problem = _check_label(raw_label, max_len)
    if problem:
        skips.add(label_source, problem)
        return None
    return label


# --- one example -------------------------------------------------------------


def _check_label(raw: str, max_len: int | None) -> tuple[str, str | None]:
    """(normalized label, None) or ("", reason to skip)."""
    if not raw.strip():
        return "", "empty label"
    # Letters (L*), numbers (N*) and combining marks (M*) outside ASCII are
    # text we cannot represent; anything else non-alphanumeric is punctuation.
    outside = [
        c
        for c in unicodedata.normalize("NFC", raw)
        if not c.isascii() and unicodedata.category(c)[0] in "LNM"
    ]
    if outside:
        shown = ", ".join(repr(c) for c in dict.fromkeys(outside))
        return "", f"characters outside the label set: {shown}"
    label = normalize_label(raw)
    if not label:
        return "", f"label {raw.strip()!r} has no letters or digits"
    if max_len is not None and len(label) > max_len:
        return "", (
            f"label of {len(label)} characters is longer than the model's limit "
            f"{max_len} (CTC needs at least one frame per character)"
        )
    return label, None


def _find_image_file(folder: Path, rel: str, data_root=None) -> tuple[Path | None, str | None]:
    """(path, None) of an image file a labels.tsv line names, if it is a regular file
    (opened and closed, no byte read); else (None, the reason)."""
    if "\0" in rel:
        return None, f"image path holds a NUL byte: {rel!r}"
    path = folder / rel
    if not path.exists() and "\\" in rel:  # written on Windows
        path = folder / rel.replace("\\", "/")
    outside = confine(path, data_root)
    if outside:
        return None, f"image path is {outside}: {path}"
    try:
        f, _ = open_regular(path)
    except BadFile as e:
        return None, file_problem(e, path)
    f.close()
    return path, None


# --- writers -----------------------------------------------------------------


def _check_lengths(images: list, labels: list[str]) -> None:
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")


def _png_bytes(image) -> bytes:
    """PIL image or uint8 array (H, W) / (H, W, C) -> PNG file bytes."""
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            got = f"{array.dtype} {array.shape}"
            raise ValueError(f"images must be PIL or uint8 arrays (H, W[, C]), got {got}")
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
