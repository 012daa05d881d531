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
    return [best_path(row[:n], blank) for row, n in zip(best, frame_lengths.cpu().tolist())]


def best_path(labels: list[int], blank: int = BLANK) -> Hypothesis:
    """The hypothesis of each frame's best label: repeats collapsed, blanks dropped."""
    ids, frames, prev = [], [], blank
    for t, k in enumerate(labels):
        if k != blank and k != prev:
            ids.append(k)
            frames.append(t)
        prev = k
    return Hypothesis(ids, frames)


class BeamSearch:
    """CTC prefix beam search (pyctcdecode), with an optional KenLM n-gram language model.

    `labels` is the string of each label id 1..num_classes-1 in id order (blank
    excluded; a task's `tokenizer.labels`); a space is the word delimiter.
    `lm_path` is an ARPA or binary KenLM file; it needs the optional `kenlm`
    package (`pip install -e ".[lm]"`).
    """

    def __init__(self, labels: list[str], beam_width: int = 32, lm_path: str | None = None,
                 alpha: float = 0.5, beta: float = 1.0):
        from pyctcdecode import build_ctcdecoder

        from oracle_kd.io import InputError

        if lm_path is not None:
            from oracle_kd.safety import NOT_FOUND, BadFile, open_regular

            try:  # a FIFO would block kenlm's open forever
                open_regular(lm_path, limit=1 << 62)[0].close()
            except BadFile as e:
                raise InputError(f"{lm_path}: language model file not found" if e.reason == NOT_FOUND
                                 else f"language model {e}") from None
            try:
                import kenlm  # noqa: F401
            except ImportError:
                raise InputError("an n-gram LM needs the kenlm package: pip install -e '.[lm]'") from None
        self.beam_width = beam_width
        try:
            self.decoder = build_ctcdecoder([""] + list(labels), kenlm_model_path=lm_path, alpha=alpha, beta=beta)
        except (OSError, RuntimeError, ValueError) as err:  # kenlm's reader raises OSError on a bad file
            raise InputError(f"{lm_path}: not a readable ARPA or KenLM binary file ({err})") from None

    def __call__(self, log_probs: torch.Tensor, frame_lengths: torch.Tensor) -> list[str]:
        out = []
        for row, n in zip(log_probs.float().cpu().numpy(), frame_lengths.tolist()):
            out.append(self.decoder.decode(row[:n], beam_width=self.beam_width))
        return out
