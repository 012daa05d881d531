"""Experiment tracking: the Lightning logger every training run (teacher or student) writes to.

What a run logs (`training.CTCModule`): every LOG_EVERY_N_STEPS steps `train_loss_step`
(CTC plus the weighted KD terms), `train_ctc_loss_step`, `train_kd_loss_step` (the
weighted KD terms alone; KD runs only) and `lr`; once per epoch the same losses'
means over the epoch's steps (`train_loss_epoch` is `history.json`'s `train_loss`) and
the validation metrics (`val_word_accuracy`, `val_cer`, `val_wer`, ...).

Where: `csv` (the default) and `tensorboard` write into the run folder,
`RUN/logs/version_K/` (K counts the sessions of a run: a resumed run adds one);
`mlflow` writes to `$MLFLOW_TRACKING_URI` if set, else to `RUN/mlruns`; `wandb` to
its project `oracle-kd` (its files in `RUN/wandb`; `WANDB_MODE=offline` keeps them local).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from oracle_kd.io import InputError

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
# the packages a logger needs beyond lightning (any one of them); csv needs none
PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}
PROJECT = "oracle-kd"  # the wandb project and mlflow experiment every run goes to


def check_logger(name: str) -> None:
    """InputError, one line, when `name` is not a logger or its package is not installed
    (checked before any work starts)."""
    if name not in LOGGERS:
        raise InputError(f"unknown logger {name!r}: choose from {', '.join(LOGGERS)}")
    needs = PACKAGES.get(name, ())
    if needs and not any(importlib.util.find_spec(package) for package in needs):
        raise InputError(f"--logger {name} needs the {needs[0]} package: pip install {needs[0]}")


def make_logger(name: str, run_dir: Path):
    """The Lightning logger `name` for the run in `run_dir`."""
    check_logger(name)
    run_dir = Path(run_dir)
    run_name = "/".join(run_dir.resolve().parts[-4:])  # e.g. students/<arm>/<grid point>/seed0
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(run_dir, name="logs")
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(run_dir, name="logs", default_hp_metric=False)
    if name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(name=run_name, save_dir=run_dir, project=PROJECT)
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(experiment_name=PROJECT, run_name=run_name, save_dir=str(run_dir / "mlruns"),
                        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"))
