"""Export a student to ONNX for deployment (greedy CTC decoding stays outside the graph)."""

from __future__ import annotations

from pathlib import Path

import torch

from oracle_kd.checkpoint import load_model
from oracle_kd.io import InputError, atomic_path


class LogProbs(torch.nn.Module):
    """sources, source_lengths -> log_probs (batch, frames, classes), frame_lengths."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, sources, source_lengths):
        return self.model(sources, source_lengths)


def export_onnx(checkpoint: str, out: str) -> Path:
    task, model, meta = load_model(checkpoint)
    if getattr(model, "needs_targets", False):
        raise InputError(f"{checkpoint} is an Oracle Teacher; export a student (it reads the source alone)")
    batch = task.collate(task.example_inputs(2))
    with atomic_path(out) as tmp:
        torch.onnx.export(
            LogProbs(model), (batch.sources, batch.source_lengths), str(tmp),
            input_names=["sources", "source_lengths"], output_names=["log_probs", "frame_lengths"],
            dynamic_axes={"sources": {0: "batch"}, "source_lengths": {0: "batch"},
                          "log_probs": {0: "batch"}, "frame_lengths": {0: "batch"}},
            dynamo=False,
        )
    return Path(out)
