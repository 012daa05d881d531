"""CTC decoding and the frame spikes that alignment diagnostics read."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oracle_kd.vocab import BLANK


@dataclass
class Hypothesis:
    ids: list[int]  # label ids after collapsing repeats and removing blanks
    frames: list[int]  # for each id, the frame of its spike (first frame of its run)


def greedy_decode(log_probs: torch.Tensor, frame_lengths: torch.Tensor, blank: int = BLANK) -> list[Hypothesis]:
    """Best path decoding: argmax per frame, collapse repeats, drop blanks."""
    best = log_probs.argmax(-1).cpu().tolist()
    lengths = frame_lengths.cpu().tolist()
    hyps = []
    for row, n in zip(best, lengths):
        ids, frames, prev = [], [], blank
        for t, k in enumerate(row[:n]):
            if k != blank and k != prev:
                ids.append(k)
                frames.append(t)
            prev = k
        hyps.append(Hypothesis(ids, frames))
    return hyps
