"""Export a student to ONNX for deployment (greedy CTC decoding stays outside the graph).

The graph starts where the task's raw input starts (`task.export_graph`), so
that a front end (speech's log-mel features) is part of the graph and
deployment computes exactly the features training saw; the task names the
inputs, their dtypes and dynamic axes (`task.export_spec()`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from oracle_kd.checkpoint import load_model
from oracle_kd.io import InputError, atomic_path

OUTPUT_AXES = {"log_probs": {0: "batch", 1: "frames"}, "frame_lengths": {0: "batch"}}  # every task's outputs


def export_onnx(checkpoint: str, out: str) -> Path:
    task, model, meta = load_model(checkpoint)
    if getattr(model, "needs_targets", False):
        raise InputError(f"{checkpoint} is an Oracle Teacher; export a student (it reads the source alone)")
    spec = task.export_spec()
    module, inputs = task.export_graph(model, task.example_inputs(2))
    for name, dtype, tensor in zip(spec.input_names, spec.input_dtypes, inputs, strict=True):
        if str(tensor.dtype).removeprefix("torch.") != dtype:  # the task's spec and its graph disagree
            raise ValueError(f"export input {name!r}: the graph is traced with {tensor.dtype}, the spec says {dtype}")
    with atomic_path(out) as tmp:
        torch.onnx.export(
            module.eval(), inputs, str(tmp), opset_version=17,
            input_names=list(spec.input_names), output_names=list(OUTPUT_AXES),
            dynamic_axes={**spec.dynamic_axes, **OUTPUT_AXES},
            dynamo=False,
        )
    return Path(out)
