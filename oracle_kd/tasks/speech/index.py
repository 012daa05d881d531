"""What is known of a user's speech data set before its audio is decoded, and
decoding one utterance when it is asked for (in a data-loader worker).

`formats.index_utterances` builds an `AudioIndex` from the entries that
`checks.Checks.entry` found usable; `AudioIndex.load(i)` decodes one with
`Checks.audio`, the same checks (and reasons) the eager reader applies.
"""

from __future__ import annotations

import math
from array import array
from pathlib import Path

import numpy as np

from oracle_kd.lazy import Strings
from oracle_kd.tasks.speech.checks import Checks, Entry, Utterance


class AudioIndex:
    """For each utterance: its source ("file:line"), transcript, audio path, manifest
    duration and offset, and its length in samples at 16 kHz as the header tells.
    Columns are `lazy.Strings` and arrays, which forked loader workers share."""

    def __init__(self, checks: Checks):
        self.checks = checks
        self.sources, self.texts, self.paths = Strings(), Strings(), Strings()
        self.durations, self.offsets = array("d"), array("d")  # seconds; NaN: not given
        self.samples = array("q")
        self.total = self.skipped = 0  # lines read, skipped ones included; skipped while indexing

    def add(self, entry: Entry) -> None:
        self.sources.append(entry.source)
        self.texts.append(entry.text)
        self.paths.append(str(entry.path))
        self.durations.append(math.nan if entry.duration is None else entry.duration)
        self.offsets.append(math.nan if entry.offset is None else entry.offset)
        self.samples.append(entry.samples)

    def __len__(self):
        return len(self.samples)

    def lengths(self) -> np.ndarray:
        return np.frombuffer(self.samples, dtype=np.int64)

    def entry(self, i: int) -> Entry:
        duration, offset = self.durations[i], self.offsets[i]
        return Entry(self.sources[i], self.texts[i], Path(self.paths[i]), None if math.isnan(duration) else duration,
                     None if math.isnan(offset) else offset, self.samples[i])

    def load(self, i: int) -> tuple[Utterance | None, str | None]:
        """(the utterance with its samples, None), or (None, the reason it is not usable)."""
        return self.checks.audio(self.entry(i))

    def select(self, rows) -> "AudioIndex":
        """The utterances at `rows` (positions in this index), in that order."""
        chosen = AudioIndex(self.checks)
        for i in rows:
            chosen.add(self.entry(int(i)))
        chosen.total, chosen.skipped = self.total, self.skipped
        return chosen
