"""Inference on unlabelled inputs: one text per readable input, skips reported."""

from __future__ import annotations

import torch

from oracle_kd.decoding import greedy_decode
from oracle_kd.io import InputError


@torch.inference_mode()
def recognize(task, model, paths: list[str], skips, batch_size: int = 64, decoder=None, with_examples: bool = False):
    """Yield (source, text) for each readable input, in order (and the example, if asked).
    `paths` are what the task's `input_kind` says: files, or lines of text.

    `decoder` maps (log_probs, frame_lengths) to texts; default greedy CTC."""
    if getattr(model, "needs_targets", False):
        raise InputError("this checkpoint is an Oracle Teacher: it needs the labels, so it cannot recognize; use a student")
    examples = task.load_inputs(paths, skips)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = task.collate(chunk)
        log_probs, frame_lengths = model(batch.sources, batch.source_lengths)
        if decoder is None:
            texts = [task.tokenizer.decode(h.ids) for h in greedy_decode(log_probs, frame_lengths)]
        else:
            texts = decoder(log_probs, frame_lengths)
        for example, text in zip(chunk, texts):
            yield (example["source"], text, example) if with_examples else (example["source"], text)
