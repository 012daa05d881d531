"""Inference on unlabelled inputs: one text per readable input, skips reported."""

from __future__ import annotations

from pathlib import Path

import torch

from oracle_kd.decoding import greedy_decode
from oracle_kd.io import InputError


def load_for_inference(path: str | Path):
    """(task, model, meta) of a checkpoint, or of a student exported to ONNX (a `.onnx` file),
    which runs on onnxruntime and gives the same texts as its checkpoint."""
    if Path(path).suffix.lower() == ".onnx":
        from oracle_kd.export import load_onnx

        return load_onnx(path)
    from oracle_kd.checkpoint import load_model

    return load_model(path)


@torch.inference_mode()
def recognize(task, model, paths: list[str], skips, batch_size: int = 64, decoder=None, with_examples: bool = False):
    """Yield (source, text) for each readable input, in order (and the example, if asked).
    `paths` are what the task's `input_kind` says: files, or lines of text. `model` is a
    checkpoint's model or an exported one (`load_for_inference`).

    `decoder` maps (log_probs, frame_lengths) to texts; default greedy CTC."""
    if getattr(model, "needs_targets", False):
        raise InputError("this checkpoint is an Oracle Teacher: it needs the labels, so it cannot recognize; use a student")
    examples = task.load_inputs(paths, skips)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        log_probs, frame_lengths = forward(task, model, chunk)
        if decoder is None:
            texts = [task.tokenizer.decode(h.ids) for h in greedy_decode(log_probs, frame_lengths)]
        else:
            texts = decoder(log_probs, frame_lengths)
        for example, text in zip(chunk, texts):
            yield (example["source"], text, example) if with_examples else (example["source"], text)


def forward(task, model, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_probs, frame_lengths) of unlabelled `examples`. An exported graph starts at the
    raw input (the task's `export_inputs`); a checkpoint's model at the collated sources."""
    from oracle_kd.export import OnnxModel

    if isinstance(model, OnnxModel):
        return model(*task.export_inputs(examples))
    batch = task.collate(examples)
    return model(batch.sources, batch.source_lengths)
