"""The share of a real training epoch spent waiting for data.

Training loads data in its own process (no loader workers by default), and
speech's front end runs in collate, so every batch is read, augmented and
featurized while the model waits. One short epoch of the student through the
same `training.fit` the experiments run measures it: the gap between the end of
one step and the start of the next is the loader's turn.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import lightning.pytorch as pl

from oracle_kd.config import TrainConfig, from_dict, load_preset


class StepClock(pl.Callback):
    """Wall time of every training step (`on_train_batch_start` to `_end`) and of the gap before
    it: fetching and collating the batch (Lightning fetches it between the two hooks), plus
    the loop's own small bookkeeping, so the gap is an upper bound on the data wait."""

    def __init__(self):
        self.waits, self.steps = [], []
        self._mark = self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()
        self.waits.append(self._start - self._mark)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._mark = time.perf_counter()
        self.steps.append(self._mark - self._start)


def data_wait(task, data, preset: str, out_dir: Path, workers: int = 0) -> dict:
    """One epoch of the student over the bench data (`batches.BenchData`) with the preset's
    training settings; `workers` loader processes (training's default is 0)."""
    from oracle_kd.training import fit

    cfg = load_preset(task.name, preset)
    train = from_dict(TrainConfig, {**cfg["train"]["student"], "max_epochs": 1, "min_epochs": 1,
                                    "num_workers": workers, "accelerator": "cpu"})
    clock = StepClock()
    fit(task, "student", cfg["models"]["student"], data.train, data.val, train, out_dir, progress=False,
        callbacks=[clock])
    wait, step = sum(clock.waits), sum(clock.steps)
    return {"data_wait_fraction": wait / (wait + step), "steps": len(clock.steps), "loader_workers": workers,
            "wait_seconds": wait, "step_seconds": step,
            "median_wait_seconds": statistics.median(clock.waits),
            "median_step_seconds": statistics.median(clock.steps),
            "first_wait_seconds": clock.waits[0]}
