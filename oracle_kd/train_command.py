"""`oracle-kd train`: one training run on generated or user data, optionally distilled."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

from oracle_kd.config import KDTerm, TrainConfig, experiment_config
from oracle_kd.data import WithTeachers
from oracle_kd.experiment import default_cache, device_of
from oracle_kd.io import Busy, InputError, claim
from oracle_kd.safety import check_regular, check_writable_folder
from oracle_kd.skips import SkipLog
from oracle_kd.store import teacher_outputs
from oracle_kd.tasks import get_task
from oracle_kd.tracking import check_logger
from oracle_kd.training import fit


def train_one(args) -> dict:
    task = get_task(args.task)
    cfg = experiment_config(task, args.preset, args.overrides)
    out = Path(args.out)
    kd = kd_terms(args)  # checked before any data is read
    train_cfg = engine(cfg.train[args.model], args)  # so are the engine settings and the logger
    skips = SkipLog()
    check_before_work(args)
    root = Path(args.data_root) if getattr(args, "data_root", None) else None
    try:
        if args.train_data:
            train = task.dataset(Path(args.train_data), None, skips, train=True, model_cfg=cfg.models[args.model],
                                 data_root=root)
            val = task.dataset(Path(args.val_data), None, skips, model_cfg=cfg.models[args.model], data_root=root)
        else:
            folder = task.prepare_data(cfg.data, Path(args.cache) if args.cache else default_cache(),
                                       progress=not args.no_progress)
            train, val = (task.dataset(folder, s, skips, train=s == "train", model_cfg=cfg.models[args.model])
                          for s in ("train", "val"))
    finally:  # a data set rejected whole still lists every skip (the terminal shows the first 20)
        skips.write(out / "skipped.tsv")

    if kd:
        store = Path(args.teacher_store) if args.teacher_store else out / "teacher_outputs"
        outputs = {term.teacher: teacher_outputs(store, term.teacher, task, train, top_k=args.top_k,
                                                 device=device_of(train_cfg.accelerator)) for term in kd}
        train = WithTeachers(train, outputs)
    try:  # the same lock the experiment runner takes on a run folder: one process trains a run
        with claim(out / ".lock") if rank_zero() else nullcontext():
            result = fit(task, args.model, cfg.models[args.model], train, val, train_cfg, out, kd=kd, seed=args.seed,
                         progress=not args.no_progress, skips=skips)
    except Busy as held:
        raise InputError(f"another process is training this run: {held}") from None
    return {k: v for k, v in asdict(result).items() if k != "history"}


def check_before_work(args) -> None:
    """What can be checked in a moment is checked before data is read or generated: the
    engine settings, the data paths, and that --out can be written."""
    engine(TrainConfig(), args)
    if args.val_data and not args.train_data:
        raise InputError("--val-data is used with --train-data; without them the preset's generated data is used")
    if args.train_data and not args.val_data:
        raise InputError("--train-data needs --val-data (early stopping and model selection use it)")
    for option, path in (("--train-data", args.train_data), ("--val-data", args.val_data)):
        if path and not Path(path).exists():
            raise InputError(f"{option} {path}: not found")
    check_writable_folder(args.out, f"--out {args.out}")


def rank_zero() -> bool:
    """Under DDP, Lightning starts the other processes with this script again: one of them locks."""
    import os

    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


KD_OPTIONS = {"kd": "--kd", "tau": "--tau", "kd_weight": "--kd-weight", "top_k": "--top-k",
              "teacher_store": "--teacher-store"}  # options that only mean something with --teacher


def kd_terms(args) -> list[KDTerm] | None:
    """One KD term per --teacher (its checkpoint path names it), with the --kd method given
    for it (or the one --kd given for all); tau and weight for every term. A KD option
    without --teacher is an error (it would change nothing)."""
    if not args.teacher:
        given = [flag for name, flag in KD_OPTIONS.items() if getattr(args, name) is not None]
        if given:
            raise InputError(f"{', '.join(given)} without --teacher: KD options need a teacher checkpoint "
                             "(--teacher CKPT), or leave them out to train with CTC alone")
        return None
    if args.model != "student":
        raise InputError("--teacher distils into a student: use --model student")
    methods = args.kd or [KDTerm.method]
    if len(methods) == 1:
        methods = methods * len(args.teacher)
    if len(methods) != len(args.teacher):
        raise InputError(f"{len(args.teacher)} --teacher and {len(methods)} --kd: give one --kd, or one per teacher")
    for path in args.teacher:
        check_regular(path, "teacher checkpoint")
    tau = KDTerm.tau if args.tau is None else args.tau
    weight = KDTerm.weight if args.kd_weight is None else args.kd_weight
    return [KDTerm(method=m, teacher=str(t), tau=tau, weight=weight) for m, t in zip(methods, args.teacher)]


def engine(cfg: TrainConfig, args) -> TrainConfig:
    """The preset's budget with the command line's accelerator, devices, precision, workers and logger."""
    for name in ("devices", "num_nodes", "num_workers"):
        if getattr(args, name) < (0 if name == "num_workers" else 1):
            raise InputError(f"--{name.replace('_', '-')} must be at least {0 if name == 'num_workers' else 1}")
    check_logger(args.logger)  # a missing tracker package is reported before any work
    return replace(cfg, accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
                   precision=args.precision, num_workers=args.num_workers, logger=args.logger)
