"""The main job: data, the preset's teachers, every student arm over seeds,
diagnostics, results.json and report.md (PAPER.md, "The comparison every
experiment makes").

An experiment is a plan of units, each with its own folder under OUT:
  teachers/<name>                       a teacher of the preset (trained, then evaluated)
  teacher_outputs/<key>                 a teacher's frame log-probs on the training set (store.py)
  students/<arm>/<grid point>/seed0     a tuning trial of an arm on validation
  students/<arm>/<chosen point>/seed<k> an arm x seed run with the chosen grid point
Every run folder records what it holds (run.json): a unit is resumed or reused
only by the same run, and a changed setting is refused by name, never mixed up.
Adding an arm (in YAML or with --set) reuses every unit it does not change.

A unit is claimed with a lock file while it runs, so several processes (on one
machine, or cluster jobs over a shared file system) can run the same
experiment with the same OUT: each takes the next unit nobody holds whose
inputs are ready, and waits when there is none; every one of them writes
results.json and report.md at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from oracle_kd import diagnostics
from oracle_kd.checkpoint import load_model
from oracle_kd.config import ExperimentConfig, KDTerm, TrainConfig, experiment_config, grid_point
from oracle_kd.data import WithTeachers, dataset_identity
from oracle_kd.io import Busy, InputError, atomic_write_json, claim, file_digest
from oracle_kd.skips import SkipLog
from oracle_kd.store import distilled_targets, teacher_outputs
from oracle_kd.tasks import get_task
from oracle_kd.training import fit

WAIT_SECONDS = 15  # between looks at units that other processes hold


def default_cache() -> Path:
    return Path(os.environ.get("ORACLE_KD_CACHE", Path.home() / ".cache" / "oracle-kd"))


def device_of(accelerator: str) -> str:
    """The torch device for evaluation and teacher outputs under Lightning's accelerator name."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps" or (accelerator == "auto" and getattr(torch.backends, "mps", None)
                                and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_experiment(task_name: str, preset: str = "quick", seeds: int | None = None, out: str | Path = "runs/exp",
                   cache: Path | None = None, progress: bool = True, threads: int | None = None,
                   overrides: list[str] | None = None, engine: dict | None = None) -> dict:
    """`engine`: TrainConfig's engineering fields (accelerator, devices, precision, num_workers)."""
    task = get_task(task_name)
    cfg = experiment_config(task, preset, overrides)  # every setting checked before any work
    if seeds is not None and seeds < 1:
        raise InputError(f"--seeds must be at least 1, not {seeds}")
    engine = engine or {}
    bad = sorted(set(engine) - {*TrainConfig.ENGINE, "precision"})
    if bad:
        raise InputError(f"unknown engine settings: {', '.join(bad)}")
    if engine.get("devices", 1) > 1 or engine.get("num_nodes", 1) > 1:
        raise InputError("experiment runs one process per unit: for more devices, start the same experiment once per "
                         "device (they share --out, see README 'Long runs'); DDP is `oracle-kd train --devices N`")
    seeds = list(range(seeds if seeds is not None else cfg.seeds))
    out = Path(out).resolve()
    record_invocation(out, {"task": task_name, "preset": preset, "overrides": list(overrides or []), "seeds": seeds})
    # more threads than free cores makes PyTorch's CPU kernels much slower, not faster
    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    started = time.perf_counter()

    say(f"data: preparing {task_name} ({preset})")
    cache = Path(cache or default_cache())
    with claim(cache / f".{task_name}.lock", wait=True):  # one process prepares, the others then find it
        data_dir = task.prepare_data(cfg.data, cache, progress=progress)
    skips = SkipLog()
    splits = {s: task.dataset(data_dir, s, skips, train=s == "train", model_cfg=cfg.models["student"])
              for s in ("train", "val", "test")}
    say("data: " + ", ".join(f"{s} {len(d)}" for s, d in splits.items()) + f" ({data_dir})")
    skips.write(out / "skipped.tsv")

    runner = Runner(task, cfg, splits, out, progress, engine)
    said = None
    while (found := runner.all_units(seeds)) is None:
        if runner.worked:  # a pass that trained something took long: what it found held may be done by now
            continue
        if runner.waiting != said:  # once per change, not every WAIT_SECONDS
            said = runner.waiting
            say(f"waiting for units that other processes hold: {'; '.join(said)}")
        time.sleep(WAIT_SECONDS)
    teachers, students = found

    from oracle_kd.results import build_results

    results = build_results(task, cfg, preset, list(overrides or []), seeds, teachers, students, runner.evaluations,
                            environment={"torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "device": device_of(engine.get("accelerator", "auto")),
                                         "precision": engine.get("precision", "32-true"),
                                         "python": sys.version.split()[0]},
                            data={"path": str(data_dir), **{s: len(d) for s, d in splits.items()}, "skipped": len(skips)},
                            wall_seconds=round(time.perf_counter() - started, 1))
    from oracle_kd.results import portable

    atomic_write_json(out / "results.json", portable(results, out.resolve()))  # the Python caller gets full paths
    from oracle_kd.report import write_report

    write_report(task, results, out, test_set=splits["test"], spike_examples=cfg.diagnostics.spike_examples)
    say(f"done: {out / 'results.json'}, {out / 'report.md'}")
    return results


def record_invocation(out: Path, ident: dict) -> None:
    """OUT/experiment.json lists the invocations that ran here (the run folders decide what is reused)."""
    path = out / "experiment.json"
    seen = json.loads(path.read_text()) if path.exists() else {}
    if "invocations" not in seen:  # a folder of an older version held one experiment's identity
        seen = {"invocations": []}
    if ident not in seen["invocations"]:
        seen["invocations"].append(ident)
        atomic_write_json(path, seen)


class Runner:
    """Walks the plan once per pass: units whose folders are done are read, free ones are
    claimed and run, units other processes hold (or that wait on their output) are noted."""

    def __init__(self, task, cfg: ExperimentConfig, splits, out: Path, progress: bool, engine: dict | None = None):
        self.task, self.cfg, self.splits, self.out, self.progress = task, cfg, splits, out, progress
        self.engine = engine or {}
        self.device = device_of(self.engine.get("accelerator", "auto"))
        self.evaluations: dict[str, dict] = {}  # run folder -> its evaluation.json (per-example errors included)
        self.waiting: list[str] = []  # units other processes held during the last pass
        self.worked = False  # whether the last pass trained or evaluated anything itself
        self._announced: set[str] = set()
        self._outputs: dict[tuple[str, str], object] = {}  # (teacher, training set identity) -> store entry
        self._student = None  # a student model, for its frame counts

    def all_units(self, seeds: list[int]) -> tuple[dict, dict] | None:
        """One pass over every unit in order: (teachers, students), or None when units that
        other processes hold (or that need their output) were left for a later pass."""
        self.waiting, self.worked = [], False
        teachers = {name: self.attempt(self.teacher, name) for name in self.cfg.teachers}
        students = {arm: self.arm(arm, seeds, teachers) for arm in self.cfg.arms}
        for (name, data), out in self._outputs.items():  # what each teacher hands its students (on the split)
            if teachers.get(name) is not None and data == dataset_identity(self.splits["train"]):
                teachers[name]["posteriors"] = {**out.meta["posteriors"], "store_bytes": out.meta["bytes"]}
        return None if self.waiting else (teachers, students)

    def attempt(self, unit, *args):
        """unit(*args), or None (noted in self.waiting) while another process holds it."""
        try:
            return unit(*args)
        except Busy as held:
            self.waiting.append(str(held))
            return None

    def train_cfg(self, cfg: TrainConfig) -> TrainConfig:
        return replace(cfg, **self.engine)

    def trained(self, label: str, folder: Path, kind: str, model_cfg: dict, train, train_cfg: TrainConfig,
                kd=None, seed: int = 0):
        """fit() in `folder`, holding its lock unless the run has finished."""
        args = (self.task, kind, model_cfg, train, self.splits["val"], self.train_cfg(train_cfg), folder)
        if (folder / "result.json").exists():
            return fit(*args, kd=kd, seed=seed, progress=self.progress)
        with claim(folder / ".lock"):
            say(f"{label}: training")
            self.worked = True
            return fit(*args, kd=kd, seed=seed, progress=self.progress)

    def evaluated(self, label: str, folder: Path, checkpoint: str, copy_test: bool = False) -> dict:
        """Test metrics, per-example errors (for the paired bootstrap) and alignment accuracy
        (and the copy test) of a finished run, computed once: kept in evaluation.json beside
        its result, for that result only (a run trained again is evaluated again)."""
        path, of = folder / "evaluation.json", file_digest(folder / "result.json")

        def current() -> bool:
            return path.exists() and json.loads(path.read_text()).get("result_sha1") == of

        if not current():
            with claim(folder / ".lock"):
                if not current():
                    say(f"{label}: evaluating")
                    self.worked = True
                    task, model, _ = load_model(checkpoint, device=self.device)
                    test, decoded = diagnostics.evaluate(task, model, self.splits["test"])
                    found = {"result_sha1": of, "test": test,
                             "alignment_accuracy": diagnostics.alignment_accuracy(decoded),
                             **example_statistics(self.task, decoded.texts, decoded.references)}
                    if copy_test:
                        found["copy_test"] = diagnostics.copy_test(task, model, self.splits["test"],
                                                                   limit=self.cfg.diagnostics.copy_test_examples)
                    atomic_write_json(path, found)
        found = json.loads(path.read_text())
        self.evaluations[str(folder)] = found
        return found

    def announce(self, label: str, msg: str) -> None:
        """Say a unit's outcome once per process, not on every pass."""
        if label not in self._announced:
            self._announced.add(label)
            say(f"{label}: {msg}")

    def teacher(self, name: str) -> dict:
        spec = self.cfg.teachers[name]
        label, folder = f"teacher {name}", self.out / "teachers" / name
        res = self.trained(label, folder, spec.model, self.cfg.teacher_model(name), self.splits["train"],
                           self.cfg.teacher_train(name))
        copy = spec.copy_test if spec.copy_test is not None else spec.model == "oracle"
        found = self.evaluated(label, folder, res.checkpoint, copy_test=copy)
        metric = self.task.metrics.primary
        self.announce(label, f"{res.params} params, best after {res.epochs} epochs / {res.train_seconds:.0f}s, "
                             f"test {metric} {found['test'][metric]:.4f}")
        entry = {"model": spec.model, "set": spec.set, "checkpoint": res.checkpoint, "params": res.params,
                 "train_seconds": res.train_seconds, "total_seconds": res.total_seconds, "epochs": res.epochs,
                 "validation": res.best_val, "test": found["test"], "alignment_accuracy": found["alignment_accuracy"],
                 "converged": self.left_plateau(res.best_val), "median_epoch_seconds": median_epoch_seconds(res.history),
                 "cpu_seconds_to_best": cpu_seconds_at(res.history, res.epochs), "history": res.history,
                 "folder": str(folder)}
        if "copy_test" in found:
            entry["copy_test"] = found["copy_test"]
        return entry

    def left_plateau(self, val: dict | None) -> bool:
        """False when the best validation epoch scored what an all-blank output scores on the
        tie-break metric: the model never left the CTC blank plateau, and its "time to best"
        is only the first tie."""
        spec = self.task.metrics
        blank = spec.blank_score.get(spec.tie_break)
        return bool(val) and (blank is None or abs(val.get(spec.tie_break, blank) - blank) > 1e-3)

    def outputs(self, teacher: str, entry: dict, train):
        """The teacher's frame log-probs on the training set `train`, from the store (computed once)."""
        key = (teacher, dataset_identity(train))
        if key not in self._outputs:  # other processes computing it are waited for (store.py)
            self._outputs[key] = teacher_outputs(self.out / "teacher_outputs", entry["checkpoint"], self.task,
                                                 train, device=self.device, say=say)
        return self._outputs[key]

    def training_set(self, spec, teachers: dict):
        """The arm's training set: the training split, or (sequence-level KD) the same sources
        with the `targets` teacher's outputs as targets; then the KD teachers' outputs on it."""
        train = self.splits["train"]
        if spec.targets:
            train = distilled_targets(self.out / "teacher_outputs", teachers[spec.targets]["checkpoint"], self.task,
                                      train, self.student_frames, device=self.device, say=say)
        kd_teachers = list(dict.fromkeys(term.teacher for term in spec.kd))
        outputs = {t: self.outputs(t, teachers[t], train) for t in kd_teachers}
        return WithTeachers(train, outputs) if outputs else train

    def student_frames(self, example: dict) -> int:
        """CTC frames the student emits for one training example (models count from collated lengths)."""
        if self._student is None:
            self._student = self.task.build_model("student", self.cfg.models["student"])
        return self._student.frame_count(int(self.task.collate([example]).source_lengths[0]))

    def arm(self, arm: str, seeds: list[int], teachers: dict) -> dict | None:
        """Tuning trials (seed 0), then every seed with the chosen grid point; None while a
        unit it needs is not ready (noted in self.waiting)."""
        spec = self.cfg.arms[arm]
        need = spec.teachers
        if any(teachers.get(t) is None for t in need):
            self.waiting.append(f"{arm} (waits for teacher {', '.join(t for t in need if teachers.get(t) is None)})")
            return None
        train = self.training_set(spec, teachers)
        base = self.cfg.train["student"]
        grid = self.cfg.arm_grid(arm)
        trials = []  # seed 0 (seeds always start there): the chosen trial is the arm's seed-0 run
        for point in grid:
            kd, train_cfg = grid_point(spec.kd, base, point)
            trials.append(self.attempt(self.student_run, arm, point, train, kd, train_cfg, 0))
        if any(t is None for t in trials):
            return None
        metric, higher = self.task.metrics.primary, self.task.metrics.higher_is_better
        scores = [t["validation"][metric] for t in trials]
        pick = max(range(len(scores)), key=lambda i: scores[i] if higher else -scores[i])
        chosen = grid[pick]
        kd, train_cfg = grid_point(spec.kd, base, chosen)
        runs = [trials[pick] if seed == 0 else self.attempt(self.student_run, arm, chosen, train, kd, train_cfg, seed)
                for seed in seeds]
        if any(r is None for r in runs):
            return None
        tuning = {"grid": grid, "chosen": chosen}
        if len(grid) > 1:
            tuning["validation"] = scores
        changed = {k: v for k, v in asdict(train_cfg).items() if getattr(base, k) != v}
        return {"params": runs[0]["params"], "teachers": need, "kd": [asdict(t) for t in kd], "targets": spec.targets,
                "train": changed,
                "tuning": tuning, "runs": runs}

    def student_run(self, arm: str, point: dict, train, kd: list[KDTerm], train_cfg: TrainConfig, seed: int) -> dict:
        label, folder = f"{arm} {point_tag(point)} seed {seed}", self.run_dir(arm, point, seed)
        res = self.trained(label, folder, "student", self.cfg.models["student"], train, train_cfg,
                           kd=kd or None, seed=seed)
        found = self.evaluated(label, folder, res.checkpoint)
        metric = self.task.metrics.primary
        self.announce(label, f"validation {metric} {res.best_val[metric]:.4f}, test {found['test'][metric]:.4f}")
        return {"seed": seed, "checkpoint": res.checkpoint, "folder": str(folder), "test": found["test"],
                "validation": res.best_val, "epochs": res.epochs, "train_seconds": res.train_seconds,
                "alignment_accuracy": found["alignment_accuracy"], "params": res.params, "history": res.history}

    def run_dir(self, arm: str, point: dict, seed: int) -> Path:
        return self.out / "students" / arm / point_tag(point) / f"seed{seed}"


def point_tag(point: dict) -> str:
    """A grid point's folder name: `tau2_weight1`, `lr0.003`; `default` for the empty point."""
    parts = [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(point.items())]
    return "_".join(parts) or "default"


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


def example_statistics(task, hypotheses: list[str], references: list[str]) -> dict:
    """What evaluation.json keeps per test example for the paired bootstrap: the task's own
    statistics (`example_stats`, with its `corpus_score`), or its errors and units."""
    if hasattr(task, "example_stats"):
        return {"stats": task.example_stats(hypotheses, references).tolist()}
    errors, units = task.example_errors(hypotheses, references)
    return {"errors": [float(e) for e in errors], "units": [float(u) for u in units]}
