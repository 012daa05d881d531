"""The two user data formats of speech recognition: NeMo manifests and LibriSpeech folders.

nemo-manifest: a `.json` or `.jsonl` file with one JSON object per line (JSON
lines, not one JSON array), as NVIDIA NeMo reads them:
`{"audio_filepath": "wav/a.wav", "duration": 2.35, "text": "hello world"}`.
Paths are relative to the manifest's folder, or absolute. `duration`
(seconds) is optional; when given it must agree with the audio. An `offset`
(seconds) selects the segment `offset .. offset + duration` of a longer file.
A folder holding `manifest.jsonl` (what `write_manifest` makes) is read too.
A UTF-8 BOM, blank lines and Windows line endings are tolerated.

librispeech: the layout of LibriSpeech (openslr.org/12), a folder with
`SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt` files, each line `UTTID TRANSCRIPT`,
and the audio `UTTID.flac` beside it (`UTTID.wav` is accepted too). Every
`*.trans.txt` below the folder is read, in path order; a folder holding several
LibriSpeech splits (train-clean-100 and dev-clean, say) is refused, so that
test audio never leaks into training. A single `.trans.txt` file is read too.

Audio of any sample rate and channel count that libsndfile reads (WAV, FLAC,
OGG, MP3, ...) is averaged to mono and resampled to 16 kHz (audio.load_audio).

Reading is in two steps: `index_utterances` reads the lines and each audio
file's header (no sample decoded), `AudioIndex.load(i)` decodes one utterance,
in whichever process (a data-loader worker) asks for it; `read_utterances`
does both for every utterance, in order.

Every utterance that cannot be used is skipped with one `skips.add(source,
reason)` and reading goes on. `source` names the manifest or transcript file
and the 1-based line ("data/train.jsonl:17", "data/84/121123/84-121123.trans.txt:2");
reasons about audio end with the audio file's path. A malformed line (not
UTF-8, not JSON, not an object, a key missing or of the wrong type) is the
first reason; then the checks of one utterance and the transcript rule, both in
`checks` (`check_transcript`, `Checks`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import soundfile

from oracle_kd.io import InputError, atomic_path
from oracle_kd.safety import BadFile, confine, read_bytes
from oracle_kd.skips import SkipLog, require_usable
from oracle_kd.tasks.speech.audio import SAMPLE_RATE
from oracle_kd.tasks.speech.checks import Checks, Utterance
from oracle_kd.tasks.speech.index import AudioIndex

MANIFEST_SUFFIXES = (".json", ".jsonl")  # NeMo manifests use either for JSON lines
MANIFEST_FILE = "manifest.jsonl"  # what write_manifest writes; a folder holding it is a manifest data set
TRANS_SUFFIX = ".trans.txt"  # LibriSpeech transcript files, one per chapter
LIBRISPEECH_SPLITS = {
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other",
}


def detect_format(path: str | Path) -> str:
    """"nemo-manifest" or "librispeech"; raises InputError naming what was expected."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"data path not found: {path}")
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return "nemo-manifest"
        if path.name.endswith(TRANS_SUFFIX):
            return "librispeech"
        raise InputError(
            f"{path} is a file; give a NeMo manifest (.json or .jsonl, one JSON object "
            f"per line) or a LibriSpeech folder (SPEAKER/CHAPTER/SPEAKER-CHAPTER{TRANS_SUFFIX})"
        )
    has_manifest = (path / MANIFEST_FILE).is_file()
    has_trans = next(path.rglob(f"*{TRANS_SUFFIX}"), None) is not None
    if has_manifest and has_trans:
        raise InputError(
            f"{path} holds both {MANIFEST_FILE} and LibriSpeech {TRANS_SUFFIX} files: "
            f"give the manifest file, or a folder holding only one of them"
        )
    if has_manifest:
        return "nemo-manifest"
    if has_trans:
        return "librispeech"
    manifests = sorted(p.name for p in path.iterdir() if p.suffix.lower() in MANIFEST_SUFFIXES)
    hint = f"; give one of the manifests in it: {', '.join(manifests[:3])}" if manifests else ""
    raise InputError(
        f"{path} is neither a LibriSpeech folder (SPEAKER/CHAPTER/SPEAKER-CHAPTER{TRANS_SUFFIX} "
        f"below it) nor a folder holding {MANIFEST_FILE}{hint}"
    )


def read_utterances(
    path: str | Path,
    skips: SkipLog,
    min_frames_per_char: float | None = None,
    frame_rate: float | None = None,
    data_root: str | Path | None = None,
) -> list[Utterance]:
    """All usable utterances of a NeMo manifest or a LibriSpeech folder, in order.

    With `frame_rate` (CTC frames per second of audio), an utterance is skipped
    when `int(seconds * frame_rate)` is below what CTC needs for its
    transcript: one frame per character plus one blank between each repeated
    pair ("ll" in "hello"); with `min_frames_per_char` too, also when below
    `min_frames_per_char * len(text)`. Raises InputError if the data set is
    missing, unreadable as a whole, or has no usable utterance; single bad
    utterances are reported to `skips`. With `data_root`, the data set and every
    audio file it names must lie inside that folder (symbolic links resolved); an
    utterance whose audio lies outside it is skipped.
    """
    index = index_utterances(path, skips, min_frames_per_char, frame_rate, data_root)
    skipped_before, utterances = len(skips), []
    for i in range(len(index)):
        utterance, problem = index.load(i)
        if problem:
            skips.add(index.sources[i], problem)
        else:
            utterances.append(utterance)
    return require_usable(utterances, index.total, path, index.skipped + len(skips) - skipped_before, "utterances")


def index_utterances(
    path: str | Path,
    skips: SkipLog,
    min_frames_per_char: float | None = None,
    frame_rate: float | None = None,
    data_root: str | Path | None = None,
) -> AudioIndex:
    """The utterances of a NeMo manifest or a LibriSpeech folder whose line, transcript and
    audio header are usable (`checks.Checks.entry`), in order; no audio is decoded.
    Errors and skips as `read_utterances`, except those only decoding finds."""
    if min_frames_per_char is not None and frame_rate is None:
        raise ValueError("min_frames_per_char needs frame_rate (CTC frames per second)")
    path = Path(path)
    outside = confine(path, data_root)
    if outside:
        raise InputError(f"data path {path} is {outside}")
    kind = detect_format(path)
    index = AudioIndex(Checks(frame_rate, min_frames_per_char, data_root))
    skipped_before = len(skips)
    if kind == "nemo-manifest":
        _read_manifest(path if path.is_file() else path / MANIFEST_FILE, skips, index)
    else:
        _read_librispeech(path, skips, index)
    index.skipped = len(skips) - skipped_before
    require_usable(range(len(index)), index.total, path, index.skipped, "utterances")
    return index


def write_manifest(
    out_dir: str | Path, audios: list, texts: list[str], sample_rate: int = SAMPLE_RATE
) -> Path:
    """Write `audio/000000001.wav`, ... (16-bit PCM) and `manifest.jsonl`; returns the manifest's path.

    `audios` are float arrays in [-1, 1] (clipped), (samples,) or (samples,
    channels), or int16 arrays. Texts are written as given (readers normalise
    them); paths in the manifest are relative; the manifest is written last,
    atomically.
    """
    out_dir = Path(out_dir)
    _check_lengths(audios, texts)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (audio, text) in enumerate(zip(audios, texts), start=1):
        rel = f"audio/{i:09d}.wav"
        samples = _write_audio(out_dir / rel, audio, sample_rate, "WAV")
        entry = {"audio_filepath": rel, "duration": round(samples / sample_rate, 6), "text": text}
        lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
    manifest = out_dir / MANIFEST_FILE
    with atomic_path(manifest) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8", newline="\n")
    return manifest


def write_librispeech(
    out_dir: str | Path,
    audios: list,
    texts: list[str],
    speaker: str = "84",
    chapter: str = "121123",
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """Write `SPEAKER/CHAPTER/SPEAKER-CHAPTER-0000.flac`, ... and the chapter's trans.txt; returns `out_dir`.

    `audios` as in `write_manifest`; texts are written as given (LibriSpeech's
    own are upper case), the transcript file last, atomically.
    """
    out_dir = Path(out_dir)
    _check_lengths(audios, texts)
    for i, text in enumerate(texts, start=1):
        if "\n" in text or "\r" in text:
            raise InputError(f"transcript {i} contains a line break: {text!r}")
    chapter_dir = out_dir / str(speaker) / str(chapter)
    chapter_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (audio, text) in enumerate(zip(audios, texts)):
        utt_id = f"{speaker}-{chapter}-{i:04d}"
        _write_audio(chapter_dir / f"{utt_id}.flac", audio, sample_rate, "FLAC")
        lines.append(f"{utt_id} {text}\n")
    with atomic_path(chapter_dir / f"{speaker}-{chapter}{TRANS_SUFFIX}") as tmp:
        tmp.write_text("".join(lines), encoding="utf-8", newline="\n")
    return out_dir


# --- readers -------------------------------------------------------------------


def _read_manifest(manifest: Path, skips: SkipLog, index: AudioIndex) -> None:
    """Index the usable lines of one NeMo manifest (and count its non-blank lines)."""
    folder = manifest.parent
    entries, total = _entries(manifest, skips)
    index.total += total
    first = entries[0][1] if entries else ""
    if first.lstrip().startswith("["):
        raise InputError(
            f"{manifest} holds a JSON array; a NeMo manifest holds one JSON object per line "
            f'({{"audio_filepath": ..., "duration": ..., "text": ...}})'
        )
    for source, line in entries:
        entry, problem = _parse_manifest_line(line)
        if problem:
            skips.add(source, problem)
            continue
        audio_path = Path(entry["audio_filepath"])
        if not audio_path.is_absolute():
            audio_path = folder / audio_path
        _add(index, skips, source, entry["text"], audio_path, entry.get("duration"), entry.get("offset"))


def _add(index: AudioIndex, skips: SkipLog, source: str, text: str, audio_path: Path, duration, offset) -> None:
    entry, problem = index.checks.entry(source, text, audio_path, duration, offset)
    if problem:
        skips.add(source, problem)
    else:
        index.add(entry)


def _parse_manifest_line(line: str) -> tuple[dict | None, str | None]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"line is not JSON ({e.msg} at column {e.colno})"
    if not isinstance(entry, dict):
        return None, f"line is JSON but not an object (a {type(entry).__name__})"
    for key in ("audio_filepath", "text"):
        if key not in entry:
            return None, f"missing key '{key}'"
    if not isinstance(entry["audio_filepath"], str) or not entry["audio_filepath"].strip():
        return None, f"'audio_filepath' is not a file path: {entry['audio_filepath']!r}"
    if not isinstance(entry["text"], str):
        return None, f"'text' is not a string: {entry['text']!r}"
    for key in ("duration", "offset"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            return None, f"'{key}' is not a number of seconds: {value!r}"
    return entry, None


def _read_librispeech(path: Path, skips: SkipLog, index: AudioIndex) -> None:
    """Index the usable lines of every trans.txt at or below `path` (and count them)."""
    files = [path] if path.is_file() else sorted(path.rglob(f"*{TRANS_SUFFIX}"))
    if path.is_dir():
        splits = sorted({part for f in files for part in f.relative_to(path).parts[:-1]
                         if part in LIBRISPEECH_SPLITS})
        if len(splits) > 1:
            raise InputError(
                f"{path} holds several LibriSpeech splits ({', '.join(splits)}); give one of them"
            )
    for trans in files:
        entries, count = _entries(trans, skips)
        index.total += count
        for source, line in entries:
            utt_id, *rest = line.split(maxsplit=1)
            audio_path = trans.parent / f"{utt_id}.flac"
            if not audio_path.exists() and (trans.parent / f"{utt_id}.wav").exists():
                audio_path = trans.parent / f"{utt_id}.wav"
            _add(index, skips, source, rest[0] if rest else "", audio_path, None, None)


def _entries(path: Path, skips: SkipLog) -> tuple[list[tuple[str, str]], int]:
    """("file:line", text) of the non-blank lines of `path`, and how many there are,
    lines that are not UTF-8 included (those are skipped, named by file and line)."""
    entries, total = [], 0
    for lineno, line in _text_lines(path):
        if line is not None and not line.strip():
            continue
        total += 1
        if line is None:
            skips.add(f"{path}:{lineno}", "line is not valid UTF-8 text")
        else:
            entries.append((f"{path}:{lineno}", line))
    return entries, total


def _text_lines(path: Path) -> list[tuple[int, str | None]]:
    """(1-based line number, text or None if not UTF-8) for each line of a text file."""
    try:
        raw = read_bytes(path)
    except BadFile as e:
        raise InputError(f"cannot read {path}: {e.reason}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = []
    # Split on "\n" only: str.splitlines would also break at U+2028 and the like.
    for lineno, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            lines.append((lineno, line_bytes.decode("utf-8").rstrip("\r")))
        except UnicodeDecodeError:
            lines.append((lineno, None))
    return lines


# --- writers -------------------------------------------------------------------


def _check_lengths(audios: list, texts: list[str]) -> None:
    if len(audios) != len(texts):
        raise ValueError(f"{len(audios)} audios but {len(texts)} texts")


def _write_audio(path: Path, audio, sample_rate: int, fmt: str) -> int:
    """Write 16-bit PCM; returns the number of samples (per channel)."""
    array = np.asarray(audio)
    if array.ndim not in (1, 2):
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {array.shape}")
    if array.dtype != np.int16:
        array = np.clip(array.astype(np.float32), -1.0, 1.0)
    soundfile.write(str(path), array, sample_rate, format=fmt, subtype="PCM_16")
    return len(array)
