"""The interface every task implements; the core sees nothing else of a modality."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import Dataset

from oracle_kd.data import Batch
from oracle_kd.skips import SkipLog
from oracle_kd.vocab import Vocab


class Task(Protocol):
    name: str
    vocab: Vocab
    metric: str  # primary metric, e.g. "word_accuracy" or "wer"
    higher_is_better: bool

    def prepare_data(self, data_cfg: dict, cache_root: Path, progress: bool = True) -> Path:
        """Generate (once; cached) the default data; return the folder holding its splits."""

    def dataset(self, path: Path, split: str | None, skips: SkipLog, train: bool = False) -> Dataset:
        """Examples of a generated split (`split` given) or of a user data path (`split` None).
        Examples are dicts; `collate` turns a list of them into a Batch."""

    def example_inputs(self, n: int) -> list[dict]:
        """`n` synthetic unlabelled examples (export tracing, benchmarks)."""

    def export_graph(self, model, examples: list[dict]):
        """(module, example input tensors) for ONNX export, starting from the task's raw input."""

    def collate(self, examples: list[dict]) -> Batch: ...

    def build_model(self, kind: str, cfg: dict) -> torch.nn.Module:
        """kind: student | conventional | oracle."""

    def frame_count(self, source_length: int, model_cfg: dict) -> int:
        """Frames a model emits for a source of this length (for CTC feasibility)."""

    def score(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        """Metrics, the primary one included."""

    def load_inputs(self, paths: list[str], skips: SkipLog) -> list[dict]:
        """Unlabelled examples for inference (recognize / transcribe); bad files go to `skips`."""

    def plot_spikes(self, ax, example: dict, title: str, label_ids: list[int], spike_frames: list[int], frames: int) -> None:
        """Draw the source with one model's spikes (label at its spike frame) over it."""
