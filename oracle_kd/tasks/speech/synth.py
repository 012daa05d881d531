"""Synthetic English speech from eSpeak NG, generated once into a cache.

Each utterance is one sentence (see text.py) spoken by eSpeak NG with a random
voice, variant, rate and pitch, resampled to 16 kHz, padded with a little
silence, mixed with white, pink or brown noise at a random SNR, and scaled to a
random peak level. eSpeak reports when each word starts, which gives every word
of the transcript a time span. Every utterance has its own seed, so the cache is
byte-identical whatever the worker count.

Cache layout (the loader relies on it), for split in train/val/test:
  {split}_audio.npy    int16 (total_samples,): all utterances, concatenated
  {split}_offsets.npy  int64 (N + 1,): utterance i is audio[offsets[i]:offsets[i + 1]]
  {split}_meta.jsonl   one JSON object per utterance: text (normalize_transcript form),
                       voice, variant, rate, pitch, noise, snr_db, duration (s) and
                       word_spans [[start_s, end_s), ...], one per word of text
  meta.json            config, counts, hours, data card; written last, so its
                       presence means the cache is complete
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from oracle_kd.io import atomic_path, atomic_write_json
from oracle_kd.parallel import cache_is_complete, chunk_tasks, ordered_map
from oracle_kd.tasks.speech.espeak import espeak_engine
from oracle_kd.tasks.speech.text import MAX_WORDS, MIN_WORDS, data_card, sentences, split_sentences

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
SAMPLE_RATE = 16000  # Hz of the cache; eSpeak itself speaks at 22050 Hz
CHUNK = 50  # utterances per worker task: amortizes pickling, keeps workers balanced
FRAME = 0.01  # s, frame of the energy measurements below
SILENCE_DB = 40.0  # a frame this far below the loudest one is silence (ends the last word)
NOISES = ("white", "pink", "brown")  # power spectrum flat, 1/f, 1/f^2
NOISE_LOW_HZ = 50.0  # coloured noise starts here (see _noise)


@dataclass
class SpeechConfig:
    n_train: int = 20000
    n_val: int = 1000
    n_test: int = 2000
    seed: int = 0
    text_source: str = "pypi"  # "pypi" (natural prose) or "wordfreq" (offline pseudo-sentences)
    max_words: int = 20  # longest sentence used, in words
    # Accents every split hears; see the espeak-ng-data/lang/gmw folder.
    voices: tuple[str, ...] = (
        "en", "en-us", "en-us-nyc", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
    )
    # Speakers (espeak-ng-data/voices/!v) of train and val; the test split hears only
    # test_variants: one more female, male and Klatt-synthesizer speaker each.
    variants: tuple[str, ...] = (
        "+f1", "+f2", "+f3", "+f4", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+klatt", "+klatt3", "+croak",
    )
    test_variants: tuple[str, ...] = ("+f5", "+m7", "+klatt2")
    rate: tuple[int, int] = (130, 210)  # words per minute, inclusive; eSpeak's default is 175
    pitch: tuple[int, int] = (25, 75)  # eSpeak's 0..100 scale, inclusive; default 50
    snr_db: tuple[float, float] = (5.0, 40.0)  # speech power over noise power, uniform
    pad: tuple[float, float] = (0.05, 0.4)  # s of silence (noise only) before and after the speech
    peak_dbfs: tuple[float, float] = (-20.0, -1.0)  # loudest sample of the result
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self):
        if self.text_source not in ("pypi", "wordfreq"):
            raise ValueError(f"text_source must be 'pypi' or 'wordfreq', got {self.text_source!r}")
        if not MIN_WORDS <= self.max_words <= MAX_WORDS:
            raise ValueError(f"max_words must be in [{MIN_WORDS}, {MAX_WORDS}]")
        if set(self.variants) & set(self.test_variants):
            raise ValueError("test_variants must not appear in variants: they are the held-out speakers")
        if not (self.voices and self.variants and self.test_variants):
            raise ValueError("voices, variants and test_variants must not be empty")
        for name in ("rate", "pitch", "snr_db", "pad", "peak_dbfs"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} range is empty: {lo} > {hi}")

    def count(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def speakers(self, split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(voices, variants) the split draws from."""
        return self.voices, self.test_variants if split == "test" else self.variants


def synthesize_dataset(
    config: SpeechConfig, out_dir: Path, workers: int = 2, progress: bool = True, text_cache: Path | None = None
) -> Path:
    """Speak train/val/test into out_dir (skip if out_dir/meta.json exists and matches config); return out_dir.

    text_cache holds the PyPI archives of the "pypi" text source (default: default_text_cache()).
    """
    out_dir = Path(out_dir)
    if cache_is_complete(out_dir, FORMAT_VERSION, _config_dict(config)):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    texts = split_sentences(s for s in sentences(config.text_source, text_cache or default_text_cache())
                            if s.count(" ") < config.max_words)
    for split in SPLITS:
        if config.count(split) and not texts[split]:
            raise ValueError(f"no {split} sentences of at most {config.max_words} words")
    order = {split: _sentence_order(config, split, texts[split]) for split in SPLITS}
    tasks = chunk_tasks({split: config.count(split) for split in SPLITS}, CHUNK)
    writers = {split: _SplitWriter(out_dir, split) for split in SPLITS}
    started = time.perf_counter()
    try:
        with _progress_bar(sum(map(config.count, SPLITS)), progress) as bar:
            for (split, start, stop), chunk in zip(tasks, ordered_map(_synth_chunk, tasks, _init_worker, (config, order), workers)):
                for audio, record in chunk:
                    writers[split].add(audio, record)
                bar.update(stop - start)
        samples = {split: writer.finish() for split, writer in writers.items()}
    finally:
        for writer in writers.values():
            writer.discard()
    if progress:
        total = sum(map(config.count, SPLITS))
        elapsed = time.perf_counter() - started
        hours = sum(samples.values()) / config.sample_rate / 3600
        print(f"{total} utterances, {hours:.2f} h of audio in {elapsed:.0f} s "
              f"({total / max(elapsed, 1e-9):.1f} utterances/s, {workers} workers)")

    atomic_write_json(out_dir / "meta.json", _meta(config, texts, samples))  # last: the completeness marker
    return out_dir


def default_text_cache() -> Path:
    """Where the "pypi" text source keeps its archives: $XDG_CACHE_HOME/oracle_kd/speech_text."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "oracle_kd" / "speech_text"


def synthesize_utterance(text: str, rng: np.random.Generator, config: SpeechConfig, split: str = "train"):
    """One utterance: int16 audio at config.sample_rate and its meta record (see the cache layout)."""
    voices, variants = config.speakers(split)
    voice = str(voices[rng.integers(len(voices))])
    variant = str(variants[rng.integers(len(variants))])
    rate = int(rng.integers(config.rate[0], config.rate[1] + 1))
    pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
    espeak = espeak_engine()
    samples, events = espeak.speak(text, voice + variant, rate, pitch, seed=int(rng.integers(2**31)))
    speech = _resample(samples.astype(np.float32) / 32768.0, espeak.sample_rate, config.sample_rate)
    loud = _frame_db(speech, config.sample_rate) > -SILENCE_DB  # relative to the loudest frame
    speech_end = (np.flatnonzero(loud)[-1] + 1) * FRAME if loud.any() else len(speech) / config.sample_rate
    spans = word_spans(text, events, espeak.sample_rate, speech_end)

    lead, tail = (int(rng.uniform(*config.pad) * config.sample_rate) for _ in range(2))
    audio = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
    noise = str(NOISES[rng.integers(len(NOISES))])
    snr_db = float(rng.uniform(*config.snr_db))
    speech_power = float(np.mean(speech**2)) if len(speech) else 0.0
    audio += _noise(noise, len(audio), rng, config.sample_rate) * np.sqrt(speech_power / 10 ** (snr_db / 10))
    peak = 10 ** (rng.uniform(*config.peak_dbfs) / 20)
    audio *= peak / max(float(np.abs(audio).max()), 1e-9)
    audio = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)

    offset = lead / config.sample_rate
    return audio, {
        "text": text,
        "voice": voice,
        "variant": variant,
        "rate": rate,
        "pitch": pitch,
        "noise": noise,
        "snr_db": round(snr_db, 2),
        "duration": len(audio) / config.sample_rate,
        "word_spans": [[round(offset + start, 4), round(offset + end, 4)] for start, end in spans],
    }


def word_spans(text: str, events: list[tuple[int, int]], sample_rate: int, speech_end: float) -> list[list[float]]:
    """[start_s, end_s) of each space-separated word of text, from eSpeak word events.

    events: (text_position, sample) pairs, text_position being the 1-based character
    offset eSpeak reports. An event maps to the word that holds its position (some
    words give two, e.g. "ii" is read "i i"; the first counts). A word ends where the
    next one starts, the last one at speech_end (s). eSpeak speaks a few common pairs
    as one unit ("on the", "was the") and gives the second word no event: the words
    of such a unit share its span in proportion to their letters (an approximation).
    """
    words = text.split(" ")
    first_char = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
    known: dict[int, float] = {}
    for position, sample in events:
        index = int(np.searchsorted(first_char, position - 1, side="right")) - 1
        if 0 <= index < len(words) and index not in known:
            known[index] = sample / sample_rate
    known.setdefault(0, 0.0)
    known[len(words)] = max(speech_end, max(known.values()) + FRAME)
    anchors = sorted(known)
    starts = []
    for index, stop in zip(anchors, anchors[1:]):
        weights = np.array([len(w) + 1 for w in words[index:stop]], dtype=np.float64)
        fractions = np.concatenate([[0.0], np.cumsum(weights)[:-1]]) / weights.sum()
        starts.extend(known[index] + fractions * (known[stop] - known[index]))
    bounds = np.maximum.accumulate(starts + [known[len(words)]])  # events never go back; keep it so
    return [[float(a), float(b)] for a, b in zip(bounds[:-1], bounds[1:])]


# --- signal helpers -------------------------------------------------------------------------------


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32)


def _frame_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Power of each FRAME-long frame in dB relative to the loudest frame."""
    size = int(FRAME * sample_rate)
    frames = audio[: len(audio) // size * size].reshape(-1, size)
    power = (frames.astype(np.float64) ** 2).mean(axis=1) + 1e-20
    return 10 * np.log10(power / power.max()) if len(power) else power


def _noise(kind: str, n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """float32 noise of unit power, power spectrum flat (white), 1/f (pink) or 1/f^2 (brown).

    Coloured noise has nothing below NOISE_LOW_HZ: a 1/f^k spectrum followed down to
    0 Hz puts most of its power in an inaudible drift, and the SNR would mean little.
    """
    if kind == "white" or n < 2:
        noise = rng.standard_normal(n)
    else:
        size = 1 << (n - 1).bit_length()  # a power of two: FFTs of odd lengths can be 20x slower
        spectrum = np.fft.rfft(rng.standard_normal(size))
        frequency = np.fft.rfftfreq(size, 1 / sample_rate)
        audible = frequency >= NOISE_LOW_HZ
        spectrum[~audible] = 0.0
        spectrum[audible] /= frequency[audible] ** (0.5 if kind == "pink" else 1.0)  # amplitude: power^(1/2)
        noise = np.fft.irfft(spectrum, size)[:n]
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


# --- dataset assembly -------------------------------------------------------------------------

_STATE = None  # (config, order) in each worker, set once by _init_worker


def _init_worker(state) -> None:
    global _STATE
    _STATE = state


def _synth_chunk(task) -> list:
    """Utterances start..stop of one split; each seeded by (seed, split index, i) alone."""
    split, start, stop = task
    config, order = _STATE
    out = []
    for i in range(start, stop):
        rng = np.random.default_rng([config.seed, SPLITS.index(split), i])
        text = order[split][i % len(order[split])]
        out.append(synthesize_utterance(text, rng, config, split))
    return out


def _sentence_order(config: SpeechConfig, split: str, texts: list[str]) -> list[str]:
    """The split's sentences in a seeded random order; utterance i says entry i mod len."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), 2**32 - 1])  # not an utterance index
    return [texts[j] for j in rng.permutation(len(texts))]


class _SplitWriter:
    """Appends utterances to a raw file, then turns it into {split}_audio.npy and friends."""

    def __init__(self, out_dir: Path, split: str):
        self.out_dir, self.split = out_dir, split
        self.raw_path = out_dir / f".{split}_audio.raw.tmp"
        self.raw = open(self.raw_path, "wb")
        self.offsets = [0]
        self.records: list[str] = []

    def add(self, audio: np.ndarray, record: dict) -> None:
        self.raw.write(audio.astype("<i2").tobytes())
        self.offsets.append(self.offsets[-1] + len(audio))
        self.records.append(json.dumps(record))

    def discard(self) -> None:
        """Remove the raw file (a no-op after finish)."""
        self.raw.close()
        self.raw_path.unlink(missing_ok=True)

    def finish(self) -> int:
        """Write the split's files; return its number of samples."""
        self.raw.close()
        total = self.offsets[-1]
        with atomic_path(self.out_dir / f"{self.split}_audio.npy") as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype="<i2", shape=(total,))
            with open(self.raw_path, "rb") as raw:
                block = 1 << 22  # samples
                for start in range(0, total, block):
                    data = np.frombuffer(raw.read(2 * min(block, total - start)), dtype="<i2")
                    array[start : start + len(data)] = data
            array.flush()
            del array
        self.raw_path.unlink()
        with atomic_path(self.out_dir / f"{self.split}_offsets.npy") as tmp, open(tmp, "wb") as file:
            np.save(file, np.array(self.offsets, dtype=np.int64), allow_pickle=False)  # a path would get ".npy" added
        with atomic_path(self.out_dir / f"{self.split}_meta.jsonl") as tmp:
            tmp.write_text("".join(line + "\n" for line in self.records))
        return total


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="utt", desc="speaking")


def _config_dict(config: SpeechConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))  # tuples -> lists, as read back from meta.json


def _meta(config: SpeechConfig, texts: dict[str, list[str]], samples: dict[str, int]) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "config": _config_dict(config),
        "counts": {split: config.count(split) for split in SPLITS},
        "hours": {split: round(samples[split] / config.sample_rate / 3600, 4) for split in SPLITS},
        "total_hours": round(sum(samples.values()) / config.sample_rate / 3600, 4),
        "sample_rate": config.sample_rate,
        "sentences_available": {split: len(texts[split]) for split in SPLITS},
        "held_out": {
            "test_variants": list(config.test_variants),
            "sentences": "split by a hash of the text (text.sentence_split): no sentence is in two splits",
        },
        "sources": {
            "text": data_card(config.text_source),
            "speech": {
                "synthesizer": f"eSpeak NG via espeakng-loader {version('espeakng-loader')}",
                "licence": "eSpeak NG and its voice data are GPL-3.0-or-later; the generated audio is "
                "program output, not a copy of the program (no licence claim made on it here)",
            },
        },
        # Samples are reproducible bit for bit only with the same library versions.
        "libraries": {name: version(name) for name in ("numpy", "soxr", "espeakng-loader")},
    }
