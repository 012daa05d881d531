"""One utterance, from a user's data set: is it usable, and what is its transcript?

`Checks.utterance` runs the checks of one utterance in two steps, and the
first failure is the reason it is skipped. Before any sample is decoded
(`Checks.entry`, when a data set is indexed): transcript (empty, digits,
symbols, letters outside a-z, empty after normalisation), audio file (missing,
unreadable header, empty), then from the header's length the manifest duration
(off by more than 0.5 s, or by more than 10% and 50 ms) and, when `frame_rate`
is given, audio too short for its transcript under CTC. When the samples are
decoded (`Checks.audio`, when the utterance is read): audio (unreadable,
truncated, empty, silent: peak below SILENT_PEAK), duration and CTC length
again, from the samples. The readers in `formats` check each line's syntax
before.

Transcripts (`check_transcript`): the vocabulary is lowercase a-z, the
apostrophe and the space. Accents are folded away (Unicode NFKD, combining
marks dropped: "café" -> "cafe", "naïve" -> "naive"; fullwidth letters and
ligatures like "ﬁ" become plain ones). Nothing is expanded, so a transcript
that would need words the speaker said but the text does not hold is skipped,
not changed: any digit ("digits in transcript: '1984' (spell numbers out)"), a
spoken symbol (& % $ € £ ¥ @ + = ° §), or a letter that does not fold to a-z
(ß, æ, ø, Greek, Cyrillic, CJK). Everything else is `text.normalize_transcript`,
the rule the synthetic corpus uses too: lowercase; whitespace, hyphens, dashes,
slashes and underscores separate words; other punctuation is removed;
typographic apostrophes become ', kept inside words, stripped at their edges:
"Well-known, isn't it?" -> "well known isn't it".
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oracle_kd.safety import confine
from oracle_kd.tasks.speech.audio import SAMPLE_RATE, load_audio, load_segment, read_header

SILENT_PEAK = 1e-4  # peak amplitude (full scale 1.0) below which audio is silent: -80 dBFS
DURATION_SLACK_SECONDS = 0.5  # a manifest duration further off than this is wrong...
DURATION_SLACK_FRACTION = 0.1  # ...and so is one off by more than this fraction of it,
DURATION_ROUNDING_SECONDS = 0.05  # ...unless the difference is below this (rounded durations)
SPOKEN_SYMBOLS = "&%$€£¥@+=°§"  # symbols read aloud as words: a transcript holding one is skipped


@dataclass
class Utterance:
    audio: np.ndarray  # float32, SAMPLE_RATE, mono
    text: str  # check_transcript(raw): lowercase a-z, apostrophe, single spaces
    source: str  # "path/manifest.jsonl:17" or "path/84-121123.trans.txt:2"


def check_transcript(raw: str) -> tuple[str, str | None]:
    """(normalised transcript, None) or ("", reason to skip); the rule is in the module docstring."""
    from oracle_kd.tasks.speech.text import normalize_transcript

    if not raw.strip():
        return "", "empty transcript"
    # The checks look at the folded text; the kept text is normalize_transcript's alone.
    folded = "".join(c for c in unicodedata.normalize("NFKD", raw) if unicodedata.category(c)[0] != "M")
    digits = re.findall(r"\d+", folded)  # \d: any Unicode decimal digit
    if digits:
        shown = ", ".join(repr(d) for d in dict.fromkeys(digits))
        return "", f"digits in transcript: {shown} (spell numbers out)"
    symbols = [c for c in folded if c in SPOKEN_SYMBOLS]
    if symbols:
        shown = ", ".join(repr(c) for c in dict.fromkeys(symbols))
        return "", f"spoken symbol in transcript: {shown} (spell it out)"
    foreign = [c for c in folded if c.isalpha() and not c.isascii()]
    if foreign:
        shown = ", ".join(repr(c) for c in dict.fromkeys(foreign))
        return "", f"characters outside the vocabulary (a-z, apostrophe): {shown}"
    text = normalize_transcript(raw)
    if not re.search("[a-z]", text):
        return "", f"transcript {raw.strip()[:40]!r} is empty after normalisation"
    return text, None


@dataclass
class Entry:
    """An utterance whose transcript and audio header passed `Checks.entry`: what an
    index keeps of it until its samples are read (`Checks.audio`)."""

    source: str
    text: str  # check_transcript(raw)
    path: Path
    duration: float | None  # seconds, the manifest's (None: not given)
    offset: float | None  # seconds into the file where the segment starts (None: the whole file)
    samples: int  # at SAMPLE_RATE, as the header tells (of the segment, with an offset)


class Checks:
    """The per-utterance checks, in two steps: `entry` reads the transcript and the audio
    file's header only (for an index built before any audio is decoded), `audio` decodes
    the samples and checks them (when the utterance is read, in a loader worker). The
    last file's header and samples are kept (segments of one long file follow each other
    in manifests with offsets: their headers are read once), but not pickled; a segment
    decodes only its own samples."""

    def __init__(self, frame_rate: float | None, min_frames_per_char: float | None, data_root: Path | None = None):
        self.frame_rate, self.min_frames_per_char = frame_rate, min_frames_per_char
        self.data_root = data_root  # audio files outside it are skipped (safety.confine)
        self._last: dict = {}  # function name -> (path, its result)

    def __getstate__(self):
        return {**self.__dict__, "_last": {}}

    def utterance(
        self, source: str, raw_text: str, audio_path: Path, duration: float | None, offset: float | None
    ) -> tuple[Utterance | None, str | None]:
        """Both steps: the utterance with its samples, or the first reason it is not usable."""
        entry, problem = self.entry(source, raw_text, audio_path, duration, offset)
        return (None, problem) if problem else self.audio(entry)

    def entry(
        self, source: str, raw_text: str, audio_path: Path, duration: float | None, offset: float | None
    ) -> tuple[Entry | None, str | None]:
        """The checks that need no decoded sample: transcript, file, header, and the
        duration and CTC length the header gives."""
        text, problem = check_transcript(raw_text)
        if problem:
            return None, problem
        outside = confine(audio_path, self.data_root)
        if outside:
            return None, f"audio path is {outside}: {audio_path}"
        header, problem = self._cached(_header if offset is None else _segment_header, audio_path)
        if problem:
            return None, f"{problem}: {audio_path}"
        declared, rate = header
        samples = round(declared * SAMPLE_RATE / rate)  # soxr's output length when resampling
        if samples == 0:
            return None, f"empty audio (0 samples): {audio_path}"
        checked = duration
        if offset is not None:
            problem = _segment_problem(offset, duration, samples / SAMPLE_RATE, audio_path)
            if problem:
                return None, problem
            end = samples if duration is None else round((offset + duration) * SAMPLE_RATE)
            samples, checked = min(end, samples) - round(offset * SAMPLE_RATE), None
        problem = _duration_mismatch(checked, samples / SAMPLE_RATE)
        if problem:
            return None, f"{problem}: {audio_path}"
        problem = self._too_short(text, samples / SAMPLE_RATE)
        if problem:
            return None, problem
        return Entry(source, text, audio_path, duration, offset, samples), None

    def audio(self, entry: Entry) -> tuple[Utterance | None, str | None]:
        """`entry` with its samples decoded, or the reason they are not usable."""
        if entry.offset is None:
            audio, problem = self._cached(_load, entry.path)
            duration = entry.duration
        else:  # only the segment is decoded (the header's bounds were checked by `entry`)
            end = None if entry.duration is None else entry.offset + entry.duration
            audio, problem = _reading(lambda path: load_segment(path, entry.offset, end), entry.path)
            duration = None
        if problem:
            return None, f"{problem}: {entry.path}"
        seconds = len(audio) / SAMPLE_RATE
        problem = _silence(audio) or _duration_mismatch(duration, seconds)
        if problem:
            return None, f"{problem}: {entry.path}"
        problem = self._too_short(entry.text, seconds)
        if problem:
            return None, problem
        return Utterance(audio, entry.text, entry.source), None

    def _cached(self, function, path: Path):
        kept = self._last.get(function.__name__)
        if kept is None or kept[0] != path:
            kept = self._last[function.__name__] = (path, function(path))
        return kept[1]

    def _too_short(self, text: str, seconds: float) -> str | None:
        if self.frame_rate is None:
            return None
        from oracle_kd.vocab import ctc_min_frames

        frames = int(seconds * self.frame_rate)
        need, why = ctc_min_frames(list(text)), "one per character, one more per repeated pair"
        if self.min_frames_per_char is not None:
            per_char = math.ceil(self.min_frames_per_char * len(text))
            if per_char > need:
                need, why = per_char, f"{self.min_frames_per_char:g} per character"
        if frames >= need:
            return None
        return (f"audio too short for its transcript: {seconds:.2f} s gives {frames} frames at "
                f"{self.frame_rate:g}/s, the {len(text)}-character transcript needs {need} ({why})")


def _load(path: Path) -> tuple[np.ndarray | None, str | None]:
    return _reading(load_audio, path)


def _header(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    return _reading(read_header, path)


def _segment_header(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """The header of a file read by segments: its own size is not limited, a segment's is."""
    return _reading(lambda p: read_header(p, whole=False), path)


def _reading(read, path: Path):
    """(read(path), None), or (None, why the audio file cannot be read)."""
    try:
        return read(path), None
    except FileNotFoundError:
        return None, "audio file not found"
    except IsADirectoryError:
        return None, "audio path is a folder, not a file"
    except ValueError as e:
        return None, str(e)
    except OSError as e:
        return None, f"cannot read audio file ({e.strerror or e})"


def _segment_problem(offset: float, duration: float | None, seconds: float, path: Path) -> str | None:
    end = seconds if duration is None else offset + duration
    if end - seconds > DURATION_SLACK_SECONDS or offset >= seconds:
        return (f"segment {_seconds(offset)}-{_seconds(end)} s lies beyond the end of the audio "
                f"({seconds:.2f} s): {path}")
    return None


def _silence(audio: np.ndarray) -> str | None:
    if len(audio) == 0:
        return "empty audio (0 samples)"
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        return "silent audio (all samples are zero)"
    if peak < SILENT_PEAK:
        return f"silent audio (peak amplitude {peak:.1e}, below {SILENT_PEAK:g})"
    return None


def _duration_mismatch(duration: float | None, seconds: float) -> str | None:
    if duration is None:
        return None
    off = abs(seconds - duration)
    relative = off > DURATION_SLACK_FRACTION * duration and off > DURATION_ROUNDING_SECONDS
    if off > DURATION_SLACK_SECONDS or relative:
        return (f"manifest duration {_seconds(duration)} s but the audio is {seconds:.2f} s long "
                f"(truncated or wrong file?)")
    return None


def _seconds(value: float) -> str:
    """A number of seconds from a data file, short whatever its size (1e300 is not printed in 301 digits)."""
    return f"{value:.2f}" if abs(value) < 1e6 else f"{value:.3g}"
