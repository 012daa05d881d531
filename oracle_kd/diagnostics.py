"""Evaluation and the two measurements that decide whether an Oracle Teacher is
useful (PAPER.md): the copy test and alignment accuracy.

Everything here works on (batch, frames, classes) log-probabilities and
lengths, whatever the task.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from oracle_kd.data import Skipped, clean, dropping_skips
from oracle_kd.decoding import Hypothesis, greedy_decode
from oracle_kd.vocab import BLANK, ctc_min_frames


@dataclass
class Decoded:
    hypotheses: list[Hypothesis]
    texts: list[str]  # decoded strings
    references: list[str]
    reference_ids: list[list[int]]
    frames: list[int]  # frame count of each example
    spans: list[np.ndarray | None]  # (labels, 2) reference spans in frame units, NaN unknown
    indices: list[int] = field(default_factory=list)  # each example's position in its data set
    skipped: list = field(default_factory=list)  # skips.Skip of examples found unusable when read


def loader(task, dataset: Dataset, batch_size: int, num_workers: int = 0, skipped: list | None = None):
    """The data set's batches, in order. Examples found unusable when read (lazy user data)
    are left out, and their skips appended to `skipped`."""
    batches = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=dropping_skips(task.collate),
                         num_workers=num_workers)
    for batch in batches:
        if skipped is not None:
            skipped += batch.skipped
        if not isinstance(batch, Skipped):
            yield batch


@torch.inference_mode()
def decode(task, model, dataset: Dataset, batch_size: int = 128, progress: bool = False, num_workers: int = 0,
           details: bool = True) -> Decoded:
    """Greedy-decode `dataset`; an Oracle Teacher is given the reference labels. `progress`:
    a bar of batches on stderr. Without `details`, only the texts, references and skips are
    kept (what a score needs: a corpus of millions then holds two strings per example, not
    their label lists)."""
    from tqdm import tqdm

    model.eval()
    out = Decoded([], [], [], [], [], [])
    device = model_device(model)
    batches = loader(task, dataset, batch_size, num_workers, out.skipped)
    # disable=None: a bar only when stderr is a terminal
    for batch in tqdm(batches, desc="evaluate", unit="batch", total=-(-len(dataset) // batch_size), file=sys.stderr,
                      disable=None if progress else True):
        if getattr(model, "decodes_itself", False):  # no CTC frames: the model's own search (beam)
            batch = batch.to(device)
            hyps = [Hypothesis(ids, []) for ids in model.generate(batch.sources, batch.source_lengths)]
            frame_lengths = batch.source_lengths.cpu()
        else:
            log_probs, frame_lengths = model(*inputs(batch.to(device)))
            log_probs, frame_lengths = log_probs.float().cpu(), frame_lengths.cpu()
            hyps = greedy_decode(log_probs, frame_lengths)
        out.texts += [task.vocab.decode(h.ids) for h in hyps]
        out.references += batch.texts
        if not details:
            continue
        out.hypotheses += hyps
        out.indices += batch.indices.tolist()
        out.frames += frame_lengths.tolist()
        for row, n in enumerate(batch.target_lengths.tolist()):
            out.reference_ids.append(batch.targets[row, :n].tolist())
            out.spans.append(None if batch.spans is None else batch.spans[row, :n].numpy())
    return out


def model_device(model) -> torch.device:
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def inputs(batch) -> tuple:
    return batch.sources, batch.source_lengths, batch.targets, batch.target_lengths


def evaluate(task, model, dataset: Dataset, batch_size: int = 128, progress: bool = False, num_workers: int = 0,
             details: bool = True) -> tuple[dict, Decoded]:
    """The task's metrics of `model` on `dataset` (and `n`, the examples scored), and the
    decoded examples (see `decode`)."""
    decoded = decode(task, model, dataset, batch_size, progress, num_workers, details)
    return {**task.score(decoded.texts, decoded.references), "n": len(decoded.references)}, decoded


@torch.inference_mode()
def posteriors(task, model, dataset: Dataset, batch_size: int = 128) -> np.ndarray:
    """(examples, frames, classes) float16 frame log-probabilities of a frozen teacher on
    clean (un-augmented) sources, padded with zeros to the longest frame count; the
    teacher sees the labels if it can."""
    model.eval()
    chunks = []
    with clean(dataset):
        for batch in loader(task, dataset, batch_size):
            log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
            padding = torch.arange(log_probs.shape[1]) >= frame_lengths[:, None]
            chunks.append(log_probs.masked_fill(padding[..., None], 0.0).half().numpy())  # padding: all zeros
    frames = max(c.shape[1] for c in chunks)
    out = np.zeros((sum(len(c) for c in chunks), frames, chunks[0].shape[2]), dtype=np.float16)
    row = 0
    for c in chunks:
        out[row : row + len(c), : c.shape[1]] = c
        row += len(c)
    return out


def posterior_summary(log_probs: np.ndarray, frame_lengths: np.ndarray | None = None, chunk: int = 256) -> dict:
    """What a teacher's frame posteriors (examples, frames, classes) hand a student: the
    fraction of frames whose argmax is the blank, the mean top probability and the mean
    entropy (nats) at temperature 1, over each example's first `frame_lengths` frames
    (without them: over the rows before its padding, which is all zeros)."""
    totals = None
    for start in range(0, len(log_probs), chunk):
        lp = torch.from_numpy(np.asarray(log_probs[start : start + chunk], dtype=np.float32))
        if frame_lengths is None:
            lengths = (lp != 0).any(-1).sum(-1)  # a real log-softmax row is never all zeros
        else:
            lengths = torch.as_tensor(np.asarray(frame_lengths[start : start + chunk]))
        totals = summarize_chunk(lp, lengths, totals)
    return finish_summary(totals)


def summarize_chunk(log_probs: torch.Tensor, frame_lengths: torch.Tensor, totals: dict | None = None) -> dict:
    """Running totals for `finish_summary`: frames, blank-argmax frames, summed top
    probability and entropy (nats) over each example's own frames of one batch."""
    totals = totals or {"frames": 0, "blank": 0, "top": 0.0, "entropy": 0.0}
    lp = log_probs[torch.arange(log_probs.shape[1])[None, :] < frame_lengths[:, None]]  # (valid frames, classes)
    p = lp.exp()
    totals["frames"] += len(lp)
    totals["blank"] += int((lp.argmax(-1) == BLANK).sum())
    totals["top"] += float(p.max(-1).values.sum())
    totals["entropy"] += float(-(p * lp).sum())
    return totals


def finish_summary(totals: dict | None) -> dict:
    """`summarize_chunk`'s totals as fractions and means per frame."""
    if not totals or not totals["frames"]:
        return {"frames": 0, "blank_fraction": None, "mean_top_probability": None, "mean_entropy": None}
    n = totals["frames"]
    return {"frames": n, "blank_fraction": totals["blank"] / n, "mean_top_probability": totals["top"] / n,
            "mean_entropy": totals["entropy"] / n}


def alignment_accuracy(decoded: Decoded) -> float | None:
    """Fraction of reference labels (with a known span) whose spike lies inside it.

    Hypothesis and reference are aligned by edit distance; a reference label
    counts as hit when an identical hypothesis label is aligned to it and that
    label's spike frame centre (t + 0.5) lies in [start, end) of its span.
    Missing or wrong labels count as misses. None when no spans are known.
    """
    hits = total = 0
    for hyp, ref_ids, spans in zip(decoded.hypotheses, decoded.reference_ids, decoded.spans):
        if spans is None:
            continue
        known = ~np.isnan(spans).any(axis=1)
        total += int(known.sum())
        for i, j in matched_pairs(ref_ids, hyp.ids):
            if known[i] and spans[i, 0] <= hyp.frames[j] + 0.5 < spans[i, 1]:
                hits += 1
    return hits / total if total else None


def matched_pairs(ref: list[int], hyp: list[int]) -> list[tuple[int, int]]:
    """(ref index, hyp index) of equal labels on a minimum edit-distance alignment."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    pairs, i, j = [], n, m
    while i > 0 and j > 0:
        if d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] == hyp[j - 1]:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


@torch.inference_mode()
def copy_test(task, model, dataset: Dataset, batch_size: int = 128, limit: int = 1000) -> dict:
    """Matched (x, y) against mismatched (x', y) pairs, x' another example's source.

    A teacher that reads the source has a much higher CTC loss on mismatched
    pairs, and rarely decodes them as y; a copying teacher has almost no gap.
    Losses are per label (CTC negative log-likelihood / target length), averaged
    over pairs; mismatched pairs whose x' has too few frames for y are not used.
    """
    model.eval()
    matched, mismatched, copied, used = [], [], 0, 0
    seen = 0
    device = model_device(model)
    for batch in loader(task, dataset, batch_size):
        if seen >= limit or len(batch.texts) < 2:
            break
        batch = batch.to(device)
        seen += len(batch.texts)
        y, y_len = batch.targets, batch.target_lengths
        lp, fl = model(batch.sources, batch.source_lengths, y, y_len)
        feasible = torch.tensor([ctc_min_frames(y[r, : y_len[r]].tolist()) <= fl[r] for r in range(len(y))])
        if feasible.any():  # a source too short for its own labels has no CTC path: not a loss of 0
            matched += per_label_nll(lp[feasible], fl[feasible], y[feasible], y_len[feasible]).tolist()
        # x' = the previous example's source (a derangement of the batch)
        shifted = torch.roll(torch.arange(len(y)), 1)
        lp2, fl2 = model(batch.sources[shifted], batch.source_lengths[shifted], y, y_len)
        ok = torch.tensor([ctc_min_frames(y[r, : y_len[r]].tolist()) <= fl2[r] and batch.texts[r] != batch.texts[shifted[r]]
                           for r in range(len(y))])
        if ok.any():
            mismatched += per_label_nll(lp2[ok], fl2[ok], y[ok], y_len[ok]).tolist()
            for hyp, r in zip(greedy_decode(lp2[ok], fl2[ok]), ok.nonzero().flatten().tolist()):
                copied += hyp.ids == y[r, : y_len[r]].tolist()
            used += int(ok.sum())
    return {
        "matched_loss": float(np.mean(matched)) if matched else float("nan"),
        "mismatched_loss": float(np.mean(mismatched)) if mismatched else float("nan"),
        "mismatched_decoded_as_target": copied / used if used else float("nan"),
        "pairs": used,
    }


def per_label_nll(log_probs, frame_lengths, targets, target_lengths) -> torch.Tensor:
    nll = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, frame_lengths, target_lengths,
                                       reduction="none", zero_infinity=True)
    return nll / target_lengths.clamp(min=1)
