"""Export a student to ONNX for deployment, and run an exported file (greedy CTC
decoding stays outside the graph).

The graph starts where the task's raw input starts (`task.export_graph`), so
that a front end (speech's log-mel features) is part of the graph and
deployment computes exactly the features training saw; the task names the
inputs, their dtypes and dynamic axes (`task.export_spec()`).

The file carries what a deployment needs as ONNX metadata (`metadata_props`,
string -> string; values that are not plain strings are JSON):

| key | value |
| --- | --- |
| `oracle_kd_format` | version of this layout (`ONNX_FORMAT`) |
| `task` | the task's name, e.g. `scene-text` |
| `labels` | JSON list: the text of each class of `log_probs`' last axis, in class order; the blank's is `""` |
| `blank` | the blank's class index |
| `tokenizer` | `characters`: a label sequence's text is its labels joined with no separator; `sentencepiece`: decode with the model in `task_state` |
| `task_state` | JSON, where the task learnt something from data or is not in its default setting: translation's sentencepiece models (base64); speech's `sources` when the model reads waveforms |
| `input` | JSON: how a raw input becomes the graph's inputs (the task's `ExportSpec.preprocessing`) |
| `outputs`, `decoding` | what the outputs are and how to read them (prose) |
| `model` | JSON: kind, config and parameter count of the exported model |
| `training` | JSON: the checkpoint's other metadata (KD terms, seed) and its sha1 |
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from oracle_kd import __version__
from oracle_kd.checkpoint import load_model
from oracle_kd.io import InputError, atomic_path, file_digest
from oracle_kd.vocab import BLANK

OUTPUT_AXES = {"log_probs": {0: "batch", 1: "frames"}, "frame_lengths": {0: "batch"}}  # every task's outputs
ONNX_FORMAT = 1  # the metadata layout above; a reader refuses files of another version
TORCHSCRIPT_MAX_OPSET = 20  # the highest opset torch's TorchScript exporter writes; above, its dynamo exporter


def export_onnx(checkpoint: str, out: str) -> Path:
    task, model, meta = load_model(checkpoint)
    if getattr(model, "needs_targets", False):
        raise InputError(f"{checkpoint} is an Oracle Teacher; export a student (it reads the source alone)")
    spec = task.export_spec()
    module, inputs = task.export_graph(model, task.example_inputs(2))
    for name, dtype, tensor in zip(spec.input_names, spec.input_dtypes, inputs, strict=True):
        if str(tensor.dtype).removeprefix("torch.") != dtype:  # the task's spec and its graph disagree
            raise ValueError(f"export input {name!r}: the graph is traced with {tensor.dtype}, the spec says {dtype}")
    metadata = onnx_metadata(task, model, meta, file_digest(checkpoint))
    with atomic_path(out) as tmp:
        write_graph(module.eval(), tuple(inputs), tmp, spec)
        write_metadata(tmp, metadata)
    return Path(out)


def write_graph(module: torch.nn.Module, inputs: tuple, path: Path, spec) -> None:
    """Trace `module` on `inputs` into one ONNX file at `path`, in the opset and with the
    dynamic axes of `spec` (an `ExportSpec`)."""
    names = dict(input_names=list(spec.input_names), output_names=list(OUTPUT_AXES), opset_version=spec.opset)
    if spec.opset <= TORCHSCRIPT_MAX_OPSET:
        torch.onnx.export(module, inputs, str(path), dynamic_axes={**spec.dynamic_axes, **OUTPUT_AXES},
                          dynamo=False, **names)
        return
    import logging

    import onnx
    from torch.export import Dim

    dims: dict[str, Dim] = {}  # one symbolic size per axis name: inputs that share a name share the size
    shapes = tuple({axis: dims.setdefault(name, Dim(name)) for axis, name in spec.dynamic_axes.get(key, {}).items()}
                   for key in spec.input_names)
    # torch's own notes that say nothing of this graph: "torchvision is not installed", its internal
    # deprecations, and that inputs sharing the axis name "batch" share the size (as asked)
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message="# The axis name: .* will not be used")
            program = torch.onnx.export(module, inputs, dynamic_shapes=shapes, dynamo=True, verbose=False, **names)
    finally:
        registry.setLevel(level)
    graph = program.model_proto
    for output in graph.graph.output:  # the exporter names output axes by their sizes ("3*tokens")
        for axis, name in OUTPUT_AXES[output.name].items():
            output.type.tensor_type.shape.dim[axis].dim_param = name
    onnx.save(graph, str(path))


def onnx_metadata(task, model, meta: dict, checkpoint_sha1: str) -> dict[str, str]:
    """The exported file's metadata (see the module docstring), every value a string."""
    labels = [""] * task.tokenizer.num_classes
    labels[BLANK + 1 :] = task.tokenizer.labels  # tokenizer ids run 1..num_classes-1 after the blank
    training = {k: v for k, v in meta.items() if k not in ("task", "kind", "config", "format")}
    return {
        "oracle_kd_format": str(ONNX_FORMAT),
        "task": task.name,
        "labels": json.dumps(labels),
        "blank": str(BLANK),
        "tokenizer": getattr(task.tokenizer, "kind", "characters"),
        **({"task_state": json.dumps(task.state())} if hasattr(task, "state") and task.state() else {}),
        "input": json.dumps(task.export_spec().preprocessing),
        "outputs": "log_probs (batch, frames, classes): natural-log CTC posteriors; "
                   "frame_lengths (batch,): how many of each row's frames are valid",
        "decoding": "greedy: argmax class per valid frame, merge repeats, drop the blank, join the labels",
        "model": json.dumps({"kind": meta["kind"], "config": meta.get("config", {}),
                             "params": sum(p.numel() for p in model.parameters())}),
        "training": json.dumps({**training, "checkpoint_sha1": checkpoint_sha1}),
    }


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add `metadata` to the ONNX file at `path` (in place), and say who produced it."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    model.producer_name, model.producer_version = "oracle-kd", __version__
    onnx.save(model, str(path))


def load_onnx(path: str | Path):
    """(task, OnnxModel, metadata) of a file written by `export_onnx`; InputError with a
    one-line reason if it is not one, or one of another format version or label set."""
    import onnxruntime

    from oracle_kd.tasks import get_task

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file not found: {path}")
    try:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same budget as PyTorch's (OMP_NUM_THREADS)
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for files it cannot parse
        raise InputError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    version = metadata.get("oracle_kd_format")
    if version is None:
        raise InputError(f"{path}: an ONNX file without oracle-kd metadata; export the checkpoint again "
                         "(`oracle-kd export`)")
    if version != str(ONNX_FORMAT):
        raise InputError(f"{path}: oracle-kd ONNX format {version}, this version reads {ONNX_FORMAT}")
    task = get_task(metadata.get("task", ""))
    if "task_state" in metadata:  # a tokenizer trained on data (translation)
        task.restore(json.loads(metadata["task_state"]))
    labels = json.loads(metadata["labels"])
    if labels[int(metadata["blank"]) + 1 :] != task.tokenizer.labels:
        raise InputError(f"{path}: its label set is not the {task.name} task's of this version")
    return task, OnnxModel(session), metadata


class OnnxModel:
    """An exported student behind the models' call: (graph inputs...) -> (log_probs, frame_lengths).

    It takes what the task's `export_inputs` gives (raw waveforms for speech, not the
    features a checkpoint's model takes), so inference hands it those."""

    needs_targets = False

    def __init__(self, session):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feed = {name: t.cpu().numpy() for name, t in zip(self.input_names, inputs, strict=True)}
        log_probs, frame_lengths = self.session.run(list(OUTPUT_AXES), feed)
        return torch.from_numpy(log_probs), torch.from_numpy(frame_lengths)
