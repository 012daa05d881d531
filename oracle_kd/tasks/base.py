"""The interface every task implements; the core sees nothing else of a modality.

A task names its metrics (`MetricSpec`), turns text into label ids and back
(`Tokenizer`), says how its student is exported (`ExportSpec`) and how
inference reads its inputs (`input_kind`, `inference_command`). The core
reads these and never a task's name, a metric's name or a unit of a modality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from oracle_kd.data import Batch
from oracle_kd.skips import SkipLog


@dataclass(frozen=True)
class MetricSpec:
    """What a task's scores mean to the core: which one decides, which way is better,
    what breaks its ties, and what an output of blanks only scores."""

    primary: str  # the metric that selects checkpoints and arms, e.g. "word_accuracy" or "wer"
    higher_is_better: bool  # of the primary metric
    tie_break: str  # the metric that breaks ties of the primary, e.g. "cer"
    tie_break_higher: bool  # of the tie-break metric
    blank_score: dict[str, float] = field(default_factory=dict)  # every metric of an all-blank output


@dataclass(frozen=True)
class ExportSpec:
    """The ONNX graph's inputs, in the order `Task.export_graph` hands them over.
    The outputs are the core's: `log_probs` (batch, frames, classes) and `frame_lengths` (batch,)."""

    input_names: tuple[str, ...]
    input_dtypes: tuple[str, ...]  # numpy dtype names, e.g. ("float32", "int64")
    dynamic_axes: dict[str, dict[int, str]]  # input name -> {axis: name}, e.g. {"sources": {0: "batch"}}
    # What a deployment does to a raw input (an image file, an audio file) to get the graph's
    # inputs, as JSON-able data: written into the exported file's metadata (`input`).
    preprocessing: dict = field(default_factory=dict)
    # The graph's ONNX opset. Up to 20 torch's TorchScript exporter writes it; above, its dynamo
    # exporter (it writes opset 23's Attention operator; it cannot trace the scene-text LSTM).
    opset: int = 17


class Tokenizer(Protocol):
    """Text <-> CTC label ids; id 0 is the blank (`oracle_kd.vocab.BLANK`), ids 1..num_classes-1 are labels."""

    num_classes: int  # labels + 1 (the blank)
    labels: list[str]  # the string of each label id 1..num_classes-1 (blank excluded): beam search, plots

    def encode(self, text: str) -> list[int]:
        """Label ids of `text`; KeyError naming what is outside the label set."""

    def decode(self, ids) -> str:
        """The text of label ids (blanks and ids outside the set are dropped)."""


class Task(Protocol):
    name: str
    metrics: MetricSpec
    metric: str  # alias of metrics.primary
    higher_is_better: bool  # alias of metrics.higher_is_better
    tokenizer: Tokenizer
    vocab: Tokenizer  # alias of tokenizer (older core code reads it)
    input_kind: str  # how inference reads its inputs: "files" (one path each) or "lines" (of stdin)
    inference_command: str  # the `oracle-kd` command that runs inference: "recognize", "transcribe", ...

    def prepare_data(self, data_cfg: dict, cache_root: Path, progress: bool = True) -> Path:
        """Generate (once; cached) the default data; return the folder holding its splits."""

    def dataset(self, path: Path, split: str | None, skips: SkipLog, train: bool = False,
                model_cfg: dict | None = None, data_root: Path | None = None) -> Dataset:
        """Examples of a generated split (`split` given) or of a user data path (`split` None).
        Examples are dicts; `collate` turns a list of them into a Batch. `model_cfg` is the
        config of the model the data is for (any kind: student, conventional, oracle; they
        share the frame rate): it sets the frame count that user examples are checked
        against for CTC and the frame units of label spans. None: the student config of the
        task's `quick` preset. `data_root`: every file a user data set names must lie inside
        this folder (the others are skipped; `safety.confine`). A user data set too large for
        memory may be a `lazy.LazyDataset`: its examples are decoded when read, and one found
        unusable then is a skip marker, which the core's loaders drop and list."""

    def example_inputs(self, n: int) -> list[dict]:
        """`n` synthetic unlabelled examples (export tracing, benchmarks)."""

    def export_spec(self) -> ExportSpec:
        """Names, dtypes and dynamic axes of the ONNX graph's inputs."""

    def export_graph(self, model, examples: list[dict]):
        """(module, example input tensors) for ONNX export, starting from the task's raw input."""

    def export_inputs(self, examples: list[dict]) -> tuple[torch.Tensor, ...]:
        """The exported graph's input tensors for `examples` (those `export_graph` hands over)."""

    def collate(self, examples: list[dict]) -> Batch: ...

    def build_model(self, kind: str, cfg: dict) -> torch.nn.Module:
        """kind: student | conventional | oracle. Every model has `frame_count(source_length) -> int`."""

    def frame_count(self, source_length: int, model_cfg: dict) -> int:
        """Frames a model of config `model_cfg` emits for a raw source of this length
        (pixels of width, audio samples, ...), without building it."""

    def score(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        """Metrics, the primary one included (`metrics.blank_score` for no references)."""

    def example_errors(self, hypotheses: list[str], references: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-example (errors, units), float arrays, such that errors.sum() / units.sum() is the
        corpus error rate of the primary metric (1 - it for an accuracy); paired bootstrap."""

    def load_inputs(self, paths: list[str], skips: SkipLog) -> list[dict]:
        """Unlabelled examples for inference (`paths`: files or lines, see `input_kind`);
        bad inputs go to `skips`."""

    def plot_spikes(self, ax, example: dict, title: str, label_ids: list[int], spike_frames: list[int], frames: int) -> None:
        """Draw the source with one model's spikes (label at its spike frame) over it."""

    # Optional: `duration_seconds(example) -> float`, the real time an input lasts; where a
    # task has it, inference reports the real-time factor.
    # Optional: `stream_inputs(paths, **options) -> Iterator[inference.Piece]`, inputs of any
    # length cut into pieces read as they are needed (speech: windows of a recording);
    # inference then uses it instead of `load_inputs`.


def corpus_error_rate(process, references: list[str], hypotheses: list[str], chunk: int = 4096) -> float:
    """jiwer's corpus error rate, (substitutions + deletions + insertions) / reference units
    over all pairs, for `process` = jiwer.process_words (WER) or process_characters (CER),
    computed `chunk` pairs at a time: jiwer keeps every pair's alignment, kilobytes each,
    which for a corpus of millions is more memory than the corpus. Equal to jiwer.wer/cer."""
    errors = units = 0
    for start in range(0, len(references), chunk):
        out = process(references[start : start + chunk], hypotheses[start : start + chunk])
        errors += out.substitutions + out.deletions + out.insertions
        units += out.substitutions + out.deletions + out.hits
    return errors / max(units, 1)


DEFAULT_PRESET = "quick"  # the preset the command line uses when none is named


def preset_student_config(task_name: str) -> dict:
    """The student model config of the task's `quick` preset: `Task.dataset`'s model when none is given."""
    from oracle_kd.config import load_preset

    return load_preset(task_name, DEFAULT_PRESET)["models"]["student"]
