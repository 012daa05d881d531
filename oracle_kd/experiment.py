"""The main job: data, both teachers, every student arm over seeds, diagnostics,
results.json and report.md (PAPER.md, "The comparison every experiment makes").

Every unit of work (a teacher, a tuning trial, an arm x seed, teacher
posteriors) writes its own files under OUT and is skipped when they exist, so
running again with the same OUT continues where it stopped.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from oracle_kd import diagnostics
from oracle_kd.checkpoint import load_model
from oracle_kd.config import apply_overrides, from_dict, load_preset
from oracle_kd.data import WithTeacher
from oracle_kd.io import InputError, atomic_path, atomic_write_json
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task
from oracle_kd.training import KDConfig, TrainConfig, fit

ARMS = {  # arm -> teacher whose posteriors it learns from (None: plain CTC)
    "student_ctc": None,
    "student_kd_conventional": "conventional",
    "student_kd_oracle": "oracle",
}


def default_cache() -> Path:
    return Path(os.environ.get("ORACLE_KD_CACHE", Path.home() / ".cache" / "oracle-kd"))


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_experiment(task_name: str, preset: str = "quick", seeds: int | None = None, out: str | Path = "runs/exp",
                   cache: Path | None = None, progress: bool = True, threads: int | None = None,
                   overrides: list[str] | None = None) -> dict:
    task = get_task(task_name)
    cfg = apply_overrides(load_preset(task_name, preset), overrides)
    seeds = list(range(seeds if seeds is not None else cfg["seeds"]))
    out = Path(out)
    ident = {"task": task_name, "preset": preset, "config": cfg}
    check_same_experiment(out, {**ident, "overrides": list(overrides)} if overrides else ident)
    # more threads than free cores makes PyTorch's CPU kernels much slower, not faster
    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    started = time.perf_counter()

    say(f"data: preparing {task_name} ({preset})")
    data_dir = task.prepare_data(cfg["data"], cache or default_cache(), progress=progress)
    skips = SkipLog()
    splits = {s: task.dataset(data_dir, s, skips, train=s == "train") for s in ("train", "val", "test")}
    say("data: " + ", ".join(f"{s} {len(d)}" for s, d in splits.items()) + f" ({data_dir})")
    skips.write(out / "skipped.tsv")

    runner = Runner(task, cfg, splits, out, progress)
    teachers = {"conventional": runner.teacher("conventional", "conventional", {}),
                "oracle": runner.teacher("oracle", "oracle", {})}
    ablations = {name: runner.teacher(f"oracle_{name}", "oracle", {name: True})
                 for name in cfg["diagnostics"].get("ablations", [])}
    students = runner.students(seeds)

    results = {
        "task": task_name, "preset": preset, "overrides": list(overrides or []), "seeds": seeds, "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu",
                        "python": sys.version.split()[0]},
        "data": {"path": str(data_dir), **{s: len(d) for s, d in splits.items()}, "skipped": len(skips)},
        "teachers": teachers,
        "ablations": ablations,
        "students": students,
        "kd": runner.kd_choice,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "results.json", results)
    from oracle_kd.report import write_report

    write_report(task, results, runner, out)
    say(f"done: {out / 'results.json'}, {out / 'report.md'}")
    return results


def check_same_experiment(out: Path, ident: dict) -> None:
    """OUT holds one experiment; resuming with other settings would mix results."""
    path = out / "experiment.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(ident)):
            raise InputError(f"{out} holds a different experiment ({old['task']}, {old['preset']}, or another config); "
                             "use another --out")
    else:
        atomic_write_json(path, ident)


class Runner:
    def __init__(self, task, cfg, splits, out: Path, progress: bool):
        self.task, self.cfg, self.splits, self.out, self.progress = task, cfg, splits, out, progress
        self.kd_choice: dict = {}
        self.checkpoints: dict[str, str] = {}  # model name -> checkpoint, for the report's spike plots
        self.histories: dict[str, list] = {}

    def train_cfg(self, role: str) -> TrainConfig:
        return from_dict(TrainConfig, self.cfg["train"][role])

    def teacher(self, name: str, kind: str, overrides: dict) -> dict:
        say(f"teacher {name}: training")
        model_cfg = {**self.cfg["models"][kind], **overrides}
        res = fit(self.task, kind, model_cfg, self.splits["train"], self.splits["val"], self.train_cfg(kind),
                  self.out / "teachers" / name, seed=0, progress=self.progress)
        task, model, _ = load_model(res.checkpoint)
        test, decoded = diagnostics.evaluate(task, model, self.splits["test"])
        entry = {"checkpoint": res.checkpoint, "params": res.params, "train_seconds": res.train_seconds,
                 "total_seconds": res.total_seconds, "epochs": res.epochs, "validation": res.best_val,
                 "test": test, "alignment_accuracy": diagnostics.alignment_accuracy(decoded),
                 "converged": left_plateau(res.best_val), "median_epoch_seconds": median_epoch_seconds(res.history),
                 "cpu_seconds_to_best": cpu_seconds_at(res.history, res.epochs)}
        if kind == "oracle":
            n = self.cfg["diagnostics"]["copy_test_examples"]
            entry["copy_test"] = diagnostics.copy_test(task, model, self.splits["test"], limit=n)
        self.checkpoints[name], self.histories[name] = res.checkpoint, res.history
        say(f"teacher {name}: {res.params} params, best after {res.epochs} epochs / {res.train_seconds:.0f}s, "
            f"test {self.task.metric} {test[self.task.metric]:.4f}")
        return entry

    def posteriors(self, teacher: str) -> np.ndarray:
        """The frozen teacher's log-probs on the training set, computed once (float16 .npy)."""
        path = self.out / "posteriors" / f"{teacher}.npy"
        if not path.exists():
            say(f"posteriors of {teacher} on {len(self.splits['train'])} training examples")
            _, model, _ = load_model(self.checkpoints[teacher])
            post = diagnostics.posteriors(self.task, model, self.splits["train"])
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, post)
        return np.load(path, mmap_mode="r")

    def students(self, seeds: list[int]) -> dict:
        """Every arm over every seed, seeds in the outer loop so that a stopped run
        leaves complete seeds; KD hyper-parameters are tuned first (seed 0)."""
        trains, kds = {}, {}
        for arm, teacher in ARMS.items():
            trains[arm] = self.splits["train"] if teacher is None else WithTeacher(self.splits["train"], self.posteriors(teacher))
            kds[arm] = None if teacher is None else self.tune(arm, trains[arm])
        runs = {arm: [] for arm in ARMS}
        for seed in seeds:
            for arm in ARMS:
                runs[arm].append(self.student_run(arm, trains[arm], kds[arm], seed, first=seed == seeds[0]))
        return {arm: summarize(runs[arm], kds[arm]) for arm in ARMS}

    def student_run(self, arm: str, train, kd: KDConfig | None, seed: int, first: bool) -> dict:
        say(f"{arm} seed {seed}: training")
        res = fit(self.task, "student", self.cfg["models"]["student"], train, self.splits["val"],
                  self.train_cfg("student"), self.run_dir(arm, seed, kd), kd=kd, seed=seed, progress=self.progress)
        _, model, _ = load_model(res.checkpoint)
        test, decoded = diagnostics.evaluate(self.task, model, self.splits["test"])
        self.histories[f"{arm} seed {seed}"] = res.history
        if first:
            self.checkpoints[arm] = res.checkpoint
        say(f"{arm} seed {seed}: test {self.task.metric} {test[self.task.metric]:.4f}")
        return {"seed": seed, "checkpoint": res.checkpoint, "test": test, "validation": res.best_val,
                "epochs": res.epochs, "train_seconds": res.train_seconds,
                "alignment_accuracy": diagnostics.alignment_accuracy(decoded), "params": res.params}

    def run_dir(self, arm: str, seed: int, kd: KDConfig | None) -> Path:
        tag = "" if kd is None else f"_{kd.method}_t{kd.tau:g}_w{kd.weight:g}"
        return self.out / "students" / f"{arm}{tag}" / f"seed{seed}"

    def tune(self, arm: str, train) -> KDConfig:
        """Pick tau and weight on the validation split (seed 0); every KD arm gets the same grid."""
        grid = [KDConfig(method=self.cfg["kd"]["method"], **point) for point in self.cfg["kd"]["grid"]]
        if len(grid) > 1:
            scores = []
            for kd in grid:
                say(f"{arm}: tuning {kd}")
                res = fit(self.task, "student", self.cfg["models"]["student"], train, self.splits["val"],
                          self.train_cfg("student"), self.run_dir(arm, 0, kd), kd=kd, seed=0, progress=self.progress)
                scores.append(res.best_val[self.task.metric])
            pick = int(np.argmax(scores) if self.task.higher_is_better else np.argmin(scores))
            self.kd_choice[arm] = {"grid": [asdict(k) for k in grid], "validation": scores, "chosen": asdict(grid[pick])}
            return grid[pick]
        self.kd_choice[arm] = {"grid": [asdict(grid[0])], "chosen": asdict(grid[0])}
        return grid[0]


def left_plateau(val: dict | None) -> bool:
    """False when the best validation epoch still emitted (almost) nothing: a CER of 1
    is what an all-blank output scores, and its "time to best" is only the first tie."""
    return bool(val) and val.get("cer", 1.0) < 0.999


def median_epoch_seconds(history: list[dict]) -> float | None:
    """The median duration of one epoch (history rows hold cumulative seconds): unlike the
    wall time to best, one epoch slowed by a paused or shared machine hardly moves it."""
    ends = [row["seconds"] for row in history]
    durations = [b - a for a, b in zip([0.0] + ends, ends)]
    return round(statistics.median(durations), 2) if durations else None


def cpu_seconds_at(history: list[dict], epoch: int) -> float | None:
    """CPU time of the run up to the end of `epoch`, when the run counted it (RunRecorder)."""
    row = next((r for r in history if r["epoch"] == epoch), None)
    return row.get("cpu_seconds") if row else None


def summarize(runs: list[dict], kd: KDConfig | None) -> dict:
    metrics = [k for k in runs[0]["test"] if k != "n"]
    return {
        "params": runs[0]["params"],
        "kd": asdict(kd) if kd else None,
        "test": {m: spread([r["test"][m] for r in runs]) for m in metrics},
        "checkpoints": [r["checkpoint"] for r in runs],
        "alignment_accuracy": mean_or_none([r["alignment_accuracy"] for r in runs]),
        "runs": runs,
    }


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def mean_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None
