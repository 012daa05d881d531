"""The share of a real training epoch spent waiting for data.

Training loads data in its own process (no loader workers by default), and
speech's front end runs in collate, so every batch is read, augmented and
featurized while the model waits. Two short epochs of the student through the
same `training.fit` the experiments run measure it: the gap between the end of
one step and the start of the next is the loader's turn. The second epoch is
what the rest of a run looks like (speech keeps each utterance's features once
computed, `FeatureCache`); the first is reported beside it.
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
        self.waits, self.steps, self.epoch_starts = [], [], []
        self._mark = self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_starts.append(len(self.steps))
        self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()
        self.waits.append(self._start - self._mark)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._mark = time.perf_counter()
        self.steps.append(self._mark - self._start)


def data_wait(task, data, preset: str, out_dir: Path, workers: int = 0) -> dict:
    """Two epochs of the student over the bench data (`batches.BenchData`) with the preset's
    training settings; `workers` loader processes (training's default is 0). The figures at
    the top level are the second epoch's; `first_epoch` has the first's."""
    from oracle_kd.training import fit

    cfg = load_preset(task.name, preset)
    train = from_dict(TrainConfig, {**cfg["train"]["student"], "max_epochs": 2, "min_epochs": 2,
                                    "num_workers": workers, "accelerator": "cpu"})
    clock = StepClock()
    fit(task, "student", cfg["models"]["student"], data.train, data.val, train, out_dir, progress=False,
        callbacks=[clock])
    first, second = clock.epoch_starts[:2]
    return {**wait_figures(clock.waits[second:], clock.steps[second:]), "loader_workers": workers,
            "first_epoch": wait_figures(clock.waits[first:second], clock.steps[first:second])}


def wait_figures(waits: list[float], steps: list[float]) -> dict:
    wait, step = sum(waits), sum(steps)
    return {"data_wait_fraction": wait / (wait + step), "steps": len(steps), "wait_seconds": wait,
            "step_seconds": step, "median_wait_seconds": statistics.median(waits),
            "median_step_seconds": statistics.median(steps), "first_wait_seconds": waits[0]}
