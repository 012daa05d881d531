"""`oracle-kd train`: one training run on generated or user data, optionally distilled."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from oracle_kd import diagnostics
from oracle_kd.checkpoint import load_model
from oracle_kd.config import apply_overrides, from_dict, load_preset
from oracle_kd.data import WithTeacher
from oracle_kd.experiment import default_cache
from oracle_kd.io import InputError, atomic_path
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task
from oracle_kd.training import KDConfig, TrainConfig, fit


def train_one(args) -> dict:
    task = get_task(args.task)
    cfg = apply_overrides(load_preset(args.task, args.preset), args.overrides)
    out = Path(args.out)
    skips = SkipLog()
    if args.train_data and not args.val_data:
        raise InputError("--train-data needs --val-data (early stopping and model selection use it)")
    try:
        if args.train_data:
            train = task.dataset(Path(args.train_data), None, skips, train=True)
            val = task.dataset(Path(args.val_data), None, skips)
        else:
            folder = task.prepare_data(cfg["data"], default_cache())
            train, val = (task.dataset(folder, s, skips, train=s == "train") for s in ("train", "val"))
    finally:  # a data set rejected whole still lists every skip (the terminal shows the first 20)
        skips.write(out / "skipped.tsv")

    kd = None
    if args.teacher:
        if args.model != "student":
            raise InputError("--teacher distils into a student: use --model student")
        kd = KDConfig(method=args.kd, tau=args.tau, weight=args.kd_weight)
        train = WithTeacher(train, teacher_posteriors(task, args.teacher, train, out / "teacher_posteriors.npy"))
    train_cfg = replace(from_dict(TrainConfig, cfg["train"][args.model]), devices=args.devices, num_nodes=args.num_nodes)
    result = fit(task, args.model, cfg["models"][args.model], train, val, train_cfg, out, kd=kd, seed=args.seed)
    return {k: v for k, v in asdict(result).items() if k != "history"}


def teacher_posteriors(task, checkpoint: str, train, path: Path) -> np.ndarray:
    teacher_task, teacher, _ = load_model(checkpoint)
    if teacher_task.name != task.name:
        raise InputError(f"{checkpoint} is a {teacher_task.name} model, not {task.name}")
    if not path.exists():
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, diagnostics.posteriors(task, teacher, train))
    return np.load(path, mmap_mode="r")
