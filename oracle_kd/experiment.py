"""The main job: data, both teachers, every student arm over seeds, diagnostics,
results.json and report.md (PAPER.md, "The comparison every experiment makes").

Every unit of work (a teacher, a tuning trial, an arm x seed, teacher
posteriors) writes its own files under OUT and is skipped when they exist, so
running again with the same OUT continues where it stopped. A unit is claimed
with a lock file while it runs, so several processes (on one machine, or cluster
jobs over a shared file system) can run the same experiment with the same OUT:
each takes the next unit nobody holds whose inputs are ready, and waits when
there is none; every one of them writes results.json and report.md at the end.
"""

from __future__ import annotations

import hashlib
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
from oracle_kd.data import WithTeacher, source_lengths
from oracle_kd.io import Busy, InputError, atomic_path, atomic_write_json, claim
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task
from oracle_kd.training import KDConfig, TrainConfig, fit

ARMS = {  # arm -> teacher whose posteriors it learns from (None: plain CTC)
    "student_ctc": None,
    "student_kd_conventional": "conventional",
    "student_kd_oracle": "oracle",
}
WAIT_SECONDS = 15  # between looks at units that other processes hold


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
    cache = Path(cache or default_cache())
    with claim(cache / f".{task_name}.lock", wait=True):  # one process prepares, the others then find it
        data_dir = task.prepare_data(cfg["data"], cache, progress=progress)
    skips = SkipLog()
    splits = {s: task.dataset(data_dir, s, skips, train=s == "train") for s in ("train", "val", "test")}
    say("data: " + ", ".join(f"{s} {len(d)}" for s, d in splits.items()) + f" ({data_dir})")
    skips.write(out / "skipped.tsv")

    runner = Runner(task, cfg, splits, out, progress)
    said = None
    while (found := runner.all_units(seeds)) is None:
        if runner.worked:  # a pass that trained something took long: what it found held may be done by now
            continue
        if runner.waiting != said:  # once per change, not every WAIT_SECONDS
            said = runner.waiting
            say(f"waiting for units that other processes hold: {'; '.join(said)}")
        time.sleep(WAIT_SECONDS)
    teachers, ablations, students = found
    for name, stats in runner.posterior_stats.items():  # what each teacher hands its students
        teachers[name]["posteriors"] = stats

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
        self.posterior_stats: dict[str, dict] = {}  # teacher -> diagnostics.posterior_summary of its posteriors
        self.waiting: list[str] = []  # units other processes held during the last pass
        self.worked = False  # whether the last pass trained or evaluated anything itself
        self._announced: set[str] = set()

    def all_units(self, seeds: list[int]) -> tuple[dict, dict, dict] | None:
        """One pass over every unit in order: (teachers, ablations, students), or None when
        units that other processes hold (or that need their output) were left for a later pass."""
        self.waiting, self.worked = [], False
        teachers = {name: self.attempt(self.teacher, name, name, {}) for name in ("conventional", "oracle")}
        ablations = {name: self.attempt(self.teacher, f"oracle_{name}", "oracle", {name: True})
                     for name in self.cfg["diagnostics"].get("ablations", [])}
        students = self.students(seeds, ready={t for t, entry in teachers.items() if entry is not None})
        return None if self.waiting else (teachers, ablations, students)

    def attempt(self, unit, *args):
        """unit(*args), or None (noted in self.waiting) while another process holds it."""
        try:
            return unit(*args)
        except Busy as held:
            self.waiting.append(str(held))
            return None

    def train_cfg(self, role: str) -> TrainConfig:
        return from_dict(TrainConfig, self.cfg["train"][role])

    def trained(self, label: str, folder: Path, kind: str, model_cfg: dict, train, kd=None, seed: int = 0):
        """fit() in `folder`, holding its lock unless the run has finished."""
        args = (self.task, kind, model_cfg, train, self.splits["val"], self.train_cfg(kind), folder)
        if (folder / "result.json").exists():
            return fit(*args, kd=kd, seed=seed, progress=self.progress)
        with claim(folder / ".lock"):
            say(f"{label}: training")
            self.worked = True
            return fit(*args, kd=kd, seed=seed, progress=self.progress)

    def evaluated(self, label: str, folder: Path, checkpoint: str, copy_test: bool = False) -> dict:
        """Test metrics and alignment accuracy (and the copy test) of a finished run, computed once:
        kept in evaluation.json beside its result, for that result only (a run trained again
        is evaluated again)."""
        path, of = folder / "evaluation.json", file_digest(folder / "result.json")

        def current() -> bool:
            return path.exists() and json.loads(path.read_text()).get("result_sha1") == of

        if not current():
            with claim(folder / ".lock"):
                if not current():
                    say(f"{label}: evaluating")
                    self.worked = True
                    task, model, _ = load_model(checkpoint)
                    test, decoded = diagnostics.evaluate(task, model, self.splits["test"])
                    found = {"result_sha1": of, "test": test,
                             "alignment_accuracy": diagnostics.alignment_accuracy(decoded)}
                    if copy_test:
                        n = self.cfg["diagnostics"]["copy_test_examples"]
                        found["copy_test"] = diagnostics.copy_test(task, model, self.splits["test"], limit=n)
                    atomic_write_json(path, found)
        return json.loads(path.read_text())

    def announce(self, label: str, msg: str) -> None:
        """Say a unit's outcome once per process, not on every pass."""
        if label not in self._announced:
            self._announced.add(label)
            say(f"{label}: {msg}")

    def teacher(self, name: str, kind: str, overrides: dict) -> dict:
        label, folder = f"teacher {name}", self.out / "teachers" / name
        res = self.trained(label, folder, kind, {**self.cfg["models"][kind], **overrides}, self.splits["train"])
        found = self.evaluated(label, folder, res.checkpoint, copy_test=kind == "oracle")
        entry = {"checkpoint": res.checkpoint, "params": res.params, "train_seconds": res.train_seconds,
                 "total_seconds": res.total_seconds, "epochs": res.epochs, "validation": res.best_val,
                 "test": found["test"], "alignment_accuracy": found["alignment_accuracy"],
                 "converged": left_plateau(res.best_val), "median_epoch_seconds": median_epoch_seconds(res.history),
                 "cpu_seconds_to_best": cpu_seconds_at(res.history, res.epochs)}
        if "copy_test" in found:
            entry["copy_test"] = found["copy_test"]
        self.checkpoints[name], self.histories[name] = res.checkpoint, res.history
        self.announce(label, f"{res.params} params, best after {res.epochs} epochs / {res.train_seconds:.0f}s, "
                             f"test {self.task.metric} {found['test'][self.task.metric]:.4f}")
        return entry

    def posteriors(self, teacher: str) -> np.ndarray:
        """The frozen teacher's log-probs on the training set, computed once (float16 .npy)."""
        path = self.out / "posteriors" / f"{teacher}.npy"
        if not path.exists():
            with claim(path.with_suffix(".lock")):
                if not path.exists():
                    say(f"posteriors of {teacher} on {len(self.splits['train'])} training examples")
                    self.worked = True
                    _, model, _ = load_model(self.checkpoints[teacher])
                    post = diagnostics.posteriors(self.task, model, self.splits["train"])
                    with atomic_path(path) as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, post)
        post = np.load(path, mmap_mode="r")
        if teacher not in self.posterior_stats:  # once per process: every pass loads them again
            samples = source_lengths(self.splits["train"])  # None: fixed-size sources, every frame is real
            frames = None if samples is None else [self.task.frame_count(int(n), {}) for n in samples]
            self.posterior_stats[teacher] = diagnostics.posterior_summary(post, frames)
        return post

    def students(self, seeds: list[int], ready: set[str]) -> dict | None:
        """Every arm over every seed, seeds in the outer loop so that a stopped run
        leaves complete seeds; KD hyper-parameters are tuned first (seed 0). `ready`:
        the teachers that have finished; arms of the others wait for a later pass."""
        trains, kds = {}, {}
        for arm, teacher in ARMS.items():
            if teacher is None:
                trains[arm], kds[arm] = self.splits["train"], None
            elif teacher in ready and (post := self.attempt(self.posteriors, teacher)) is not None:
                trains[arm] = WithTeacher(self.splits["train"], post)
                if (kd := self.tune(arm, trains[arm])) is not None:
                    kds[arm] = kd
        if set(kds) != set(ARMS):
            self.waiting += [f"{arm} (waits for its teacher or tuning)" for arm in ARMS if arm not in kds]
        runs = {arm: [] for arm in kds}
        for seed in seeds:
            for arm in kds:
                runs[arm].append(self.attempt(self.student_run, arm, trains[arm], kds[arm], seed, seed == seeds[0]))
        if self.waiting:
            return None
        return {arm: summarize(runs[arm], kds[arm]) for arm in ARMS}

    def student_run(self, arm: str, train, kd: KDConfig | None, seed: int, first: bool) -> dict:
        label, folder = f"{arm} seed {seed}", self.run_dir(arm, seed, kd)
        res = self.trained(label, folder, "student", self.cfg["models"]["student"], train, kd=kd, seed=seed)
        found = self.evaluated(label, folder, res.checkpoint)
        self.histories[label] = res.history
        if first:
            self.checkpoints[arm] = res.checkpoint
        self.announce(label, f"test {self.task.metric} {found['test'][self.task.metric]:.4f}")
        return {"seed": seed, "checkpoint": res.checkpoint, "test": found["test"], "validation": res.best_val,
                "epochs": res.epochs, "train_seconds": res.train_seconds,
                "alignment_accuracy": found["alignment_accuracy"], "params": res.params}

    def run_dir(self, arm: str, seed: int, kd: KDConfig | None) -> Path:
        tag = "" if kd is None else f"_{kd.method}_t{kd.tau:g}_w{kd.weight:g}"
        return self.out / "students" / f"{arm}{tag}" / f"seed{seed}"

    def tune(self, arm: str, train) -> KDConfig | None:
        """Pick tau and weight on the validation split (seed 0); every KD arm gets the same grid.
        None while trials are held by other processes."""
        grid = [KDConfig(method=self.cfg["kd"]["method"], **point) for point in self.cfg["kd"]["grid"]]
        if len(grid) == 1:
            self.kd_choice[arm] = {"grid": [asdict(grid[0])], "chosen": asdict(grid[0])}
            return grid[0]
        trials = [self.attempt(self.trained, f"{arm} tuning tau {kd.tau:g} weight {kd.weight:g}", self.run_dir(arm, 0, kd), "student",
                               self.cfg["models"]["student"], train, kd, 0) for kd in grid]
        if any(res is None for res in trials):
            return None
        scores = [res.best_val[self.task.metric] for res in trials]
        pick = int(np.argmax(scores) if self.task.higher_is_better else np.argmin(scores))
        self.kd_choice[arm] = {"grid": [asdict(k) for k in grid], "validation": scores, "chosen": asdict(grid[pick])}
        return grid[pick]


def file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


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
