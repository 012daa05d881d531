"""User data for translation: a TSV file (`source<TAB>target`, one pair a line), or a folder
holding two aligned plain-text files, `source.txt` and `target.txt` (line i of one is the
translation of line i of the other), UTF-8.

A problem with the whole data set (missing, different line counts of the two files, no
usable pair) is an InputError; a problem with one line (not UTF-8, empty side, no tab or
more than one, longer than MAX_LINE_CHARS) skips that pair and names it in `skips`.
"""

from __future__ import annotations

from pathlib import Path

from oracle_kd.io import InputError
from oracle_kd.skips import SkipLog, require_usable

MAX_LINE_CHARS = 2000  # a longer line is almost surely not a sentence (a pasted file, a missing newline)
ALIGNED = ("source.txt", "target.txt")


def read_pairs(path: str | Path, skips: SkipLog) -> list[tuple[str, str, str]]:
    """(source, target, where) of every usable pair, in order; `where` names the line."""
    path = Path(path)
    before = len(skips)
    if path.is_file():
        lines = _lines(path)
        pairs = [_tsv_pair(raw, f"{path}:{number}", skips) for number, raw in enumerate(lines, 1)]
    elif path.is_dir():
        missing = [name for name in ALIGNED if not (path / name).is_file()]
        if missing:
            raise InputError(f"{path}: a translation data folder holds {' and '.join(ALIGNED)}; "
                             f"missing {', '.join(missing)}")
        sources, targets = (_lines(path / name) for name in ALIGNED)
        if len(sources) != len(targets):
            raise InputError(f"{path}: source.txt has {len(sources)} lines, target.txt {len(targets)}: "
                             "the files are not aligned line by line")
        pairs = [_aligned_pair(s, t, f"{path}:{number}", skips)
                 for number, (s, t) in enumerate(zip(sources, targets), 1)]
        lines = sources
    else:
        raise InputError(f"translation data not found: {path} (a .tsv file or a folder with {' and '.join(ALIGNED)})")
    usable = [pair for pair in pairs if pair is not None]
    return require_usable(usable, len(lines), path, len(skips) - before, "sentence pairs")


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":  # the final newline ends the last line; it does not start another
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def _text(raw: bytes, where: str, skips: SkipLog) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        skips.add(where, f"not UTF-8 (byte {err.start} of the line)")
        return None
    if len(text) > MAX_LINE_CHARS:
        skips.add(where, f"line of {len(text)} characters; the limit is {MAX_LINE_CHARS}")
        return None
    return text


def _tsv_pair(raw: bytes, where: str, skips: SkipLog):
    text = _text(raw, where, skips)
    if text is None:
        return None
    fields = text.split("\t")
    if len(fields) != 2:
        skips.add(where, f"expected source<TAB>target, found {len(fields) - 1} tabs")
        return None
    return _checked(fields[0], fields[1], where, skips)


def _aligned_pair(source: bytes, target: bytes, where: str, skips: SkipLog):
    source_text, target_text = _text(source, where + " (source)", skips), _text(target, where + " (target)", skips)
    if source_text is None or target_text is None:
        return None
    return _checked(source_text, target_text, where, skips)


def _checked(source: str, target: str, where: str, skips: SkipLog):
    source, target = " ".join(source.split()), " ".join(target.split())
    if not source or not target:
        skips.add(where, "empty " + ("source" if not source else "target"))
        return None
    return source, target, where
