"""Inference on unlabelled inputs: one text per readable input, skips reported.

Inputs become pieces: a whole image or line, or (for a task that streams, speech) the
overlapping windows of a recording. Pieces are batched by their total size, not by how
many inputs they come from, so a batch's memory does not depend on an input's length;
each piece's kept output frames are joined into its input's frames, which are decoded
once the input's last piece is through.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from tqdm import tqdm

from oracle_kd.decoding import best_path
from oracle_kd.io import InputError


@dataclass
class Piece:
    """All or part of one input, as the model sees it."""

    source: str  # the input it belongs to
    example: dict | None = None  # what the task's collate / export_inputs take (None with `error`)
    size: float = 1.0  # what it costs a batch, in the task's unit (1 an input; speech: seconds of audio)
    keep: tuple[int, int | None] = (0, None)  # its output frames that belong to the input
    last: bool = True  # the input's last piece
    full: bool = False  # one of a recording's windows of the full length (all of one size)
    seconds: float = 0.0  # the real time of the input it accounts for (the real-time factor)
    error: str | None = None  # the input turned out unreadable: why (its pieces so far are dropped)


def load_for_inference(path: str | Path):
    """(task, model, meta) of a checkpoint, or of a student exported to ONNX (a `.onnx` file),
    which runs on onnxruntime and gives the same texts as its checkpoint."""
    if Path(path).suffix.lower() == ".onnx":
        from oracle_kd.export import load_onnx

        return load_onnx(path)
    from oracle_kd.checkpoint import load_model

    return load_model(path)


def model_config(meta: dict) -> dict:
    """The model config in a checkpoint's metadata, or in an exported file's (`model`, JSON)."""
    if "config" in meta:
        return meta["config"]
    return json.loads(meta.get("model", "{}")).get("config", {})


@torch.inference_mode()
def recognize(task, model, inputs: list[str], skips, batch_size: float = 64, decoder=None,
              stream: dict | None = None, progress: bool = False) -> Iterator[tuple[str, str, float]]:
    """Yield (source, text, seconds) for each readable input, in order; `seconds` is how
    long the input lasts where the task can tell (else 0). `inputs` are what the task's
    `input_kind` says: files, or lines of text. `model` is a checkpoint's model or an
    exported one (`load_for_inference`). `batch_size` bounds a batch's padded size in the
    pieces' unit (see `stitched`); `stream` holds the options of the task's
    `stream_inputs` (speech: `model_cfg`, `chunk_seconds`).

    `decoder` maps (log_probs, frame_lengths) to texts; default greedy CTC."""
    if getattr(model, "needs_targets", False):
        raise InputError("this checkpoint is an Oracle Teacher: it needs the labels, so it cannot recognize; use a student")
    if hasattr(model, "generate"):  # a model with a search of its own (translation's autoregressive teacher)
        yield from generated(task, model, inputs, skips, batch_size)
        return
    if decoder is None:  # best path needs each frame's best label only: 8 bytes a frame, however long the input
        for source, best, seconds in stitched(task, model, inputs, skips, batch_size, best_labels, stream, progress):
            yield source, task.tokenizer.decode(best_path(best).ids), seconds
    else:  # beam search reads every frame's posteriors: 4 bytes x classes a frame
        for source, log_probs, seconds in stitched(task, model, inputs, skips, batch_size, None, stream, progress):
            yield source, decoder(log_probs[None], torch.tensor([len(log_probs)]))[0], seconds


def generated(task, model, inputs: list[str], skips, batch_size: float) -> Iterator[tuple[str, str, float]]:
    """(source, text, seconds) of each readable input by the model's own search, in order."""
    for batch in batches(whole_inputs(task, inputs, skips), batch_size):
        if batch[0].error is not None:
            skips.add(batch[0].source, batch[0].error)
            continue
        collated = task.collate([p.example for p in batch])
        for piece, ids in zip(batch, model.generate(collated.sources, collated.source_lengths)):
            yield piece.source, task.tokenizer.decode(ids), piece.seconds


def best_labels(log_probs: torch.Tensor) -> list[int]:
    # A list, not a tensor: a small tensor kept for the whole input is a malloc block among the
    # batches' large temporaries, and thousands of them kept glibc's heap from shrinking (peak
    # memory then grew with the recording's length); Python's small ints are shared objects.
    return log_probs.argmax(-1).tolist()


@torch.inference_mode()
def stitched(task, model, inputs: list[str], skips, batch_size: float = 64,
             reduce: Callable[[torch.Tensor], list] | None = None, stream: dict | None = None,
             progress: bool = False) -> Iterator[tuple[str, torch.Tensor | list, float]]:
    """Yield (source, frames, seconds) for each readable input, in order: the model's output
    frames over the whole input (frames, classes), joined from its pieces' kept frames; or,
    with `reduce`, one list of what it makes of each piece's kept frames (their best labels).

    Batches hold consecutive pieces while the count times the largest size stays within
    `batch_size` (one piece larger than that is a batch alone), and never mix a recording's
    full-length windows with shorter pieces: padding would change the frames near the
    shorter ones' ends, which are kept."""
    if hasattr(task, "stream_inputs"):
        pieces = task.stream_inputs(inputs, **(stream or {}))
    else:
        pieces = whole_inputs(task, inputs, skips)
    unit = "s" if hasattr(task, "duration_seconds") else "input"
    kept, seconds = [], 0.0  # the current input's frames so far: pieces come in input order
    # disable=None: a bar only when stderr is a terminal, none in a script's log
    with tqdm(unit=unit, desc=task.inference_command, file=sys.stderr, disable=None if progress else True) as bar:
        for batch in batches(pieces, batch_size):
            if batch[0].error is not None:
                skips.add(batch[0].source, batch[0].error)
                kept, seconds = [], 0.0
                continue
            log_probs, frame_lengths = forward(task, model, [p.example for p in batch])
            for piece, row, n in zip(batch, log_probs, frame_lengths.tolist()):
                first, last = piece.keep
                frames = row[first : n if last is None else min(last, n)]
                if reduce is None:
                    kept.append(frames.clone())  # not a view that would keep the whole batch
                else:
                    kept.extend(reduce(frames))
                seconds += piece.seconds
                bar.update(piece.seconds if unit == "s" else int(piece.last))
                if piece.last:
                    yield piece.source, kept if reduce else torch.cat(kept), seconds
                    kept, seconds = [], 0.0


def batches(pieces: Iterable[Piece], budget: float) -> Iterator[list[Piece]]:
    """Consecutive pieces grouped as `stitched` says; an error piece is a batch of its own."""
    batch: list[Piece] = []
    for piece in pieces:
        if batch and (piece.error is not None or piece.full != batch[0].full
                      or (len(batch) + 1) * max(piece.size, max(p.size for p in batch)) > budget):
            yield batch
            batch = []
        if piece.error is not None:
            yield [piece]
        else:
            batch.append(piece)
    if batch:
        yield batch


def whole_inputs(task, inputs: list[str], skips) -> Iterator[Piece]:
    """One piece per readable input, of size 1 (bad inputs go to `skips` as the task reads them)."""
    duration = getattr(task, "duration_seconds", None)  # optional in the task interface
    for example in task.load_inputs(inputs, skips):
        yield Piece(example["source"], example, seconds=duration(example) if duration else 0.0)


def forward(task, model, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_probs, frame_lengths) of unlabelled `examples`. An exported graph starts at the
    raw input (the task's `export_inputs`); a checkpoint's model at the collated sources."""
    from oracle_kd.export import OnnxModel

    if isinstance(model, OnnxModel):
        return model(*task.export_inputs(examples))
    batch = task.collate(examples)
    return model(batch.sources, batch.source_lengths)
