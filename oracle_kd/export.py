"""Export a student to ONNX for deployment (greedy CTC decoding stays outside the graph).

The graph starts where the task's raw input starts: float images for scene
text, waveforms for speech (the log-mel front end is part of the graph, so
deployment computes exactly the features training saw).
"""

from __future__ import annotations

from pathlib import Path

import torch

from oracle_kd.checkpoint import load_model
from oracle_kd.io import InputError, atomic_path


def export_onnx(checkpoint: str, out: str) -> Path:
    task, model, meta = load_model(checkpoint)
    if getattr(model, "needs_targets", False):
        raise InputError(f"{checkpoint} is an Oracle Teacher; export a student (it reads the source alone)")
    module, inputs = task.export_graph(model, task.example_inputs(2))
    with atomic_path(out) as tmp:
        torch.onnx.export(
            module.eval(), inputs, str(tmp), opset_version=17,
            input_names=["sources", "source_lengths"], output_names=["log_probs", "frame_lengths"],
            dynamic_axes={"sources": {0: "batch", 1: "time"}, "source_lengths": {0: "batch"},
                          "log_probs": {0: "batch", 1: "frames"}, "frame_lengths": {0: "batch"}},
            dynamo=False,
        )
    return Path(out)
