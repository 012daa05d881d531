"""results.json from the units' records: a pure function of what the run folders hold."""

from __future__ import annotations

import itertools
import statistics

import numpy as np

from oracle_kd.config import PAPER_ARMS, ExperimentConfig
from oracle_kd.stats import epochs_to_reach, paired_bootstrap, spread


def build_results(task, cfg: ExperimentConfig, preset: str, overrides: list[str], seeds: list[int], teachers: dict,
                  students: dict, evaluations: dict, environment: dict, data: dict, wall_seconds: float) -> dict:
    """`teachers` and `students` are the runner's entries (run folders' result.json and
    evaluation.json, see experiment.Runner); `evaluations` maps a run folder to its
    evaluation.json (per-example errors for the paired bootstrap)."""
    spec = task.metrics
    arms = {arm: summarize(entry) for arm, entry in students.items()}
    for name, entry in teachers.items():
        used = [arm for arm, s in students.items() if name in s["teachers"]]
        if used:
            entry["used_by"] = used
    per_arm = {arm: [example_statistics(evaluations[r["folder"]]) for r in entry["runs"]]
               for arm, entry in students.items()}
    pairs = comparison_pairs(cfg, list(students))
    def bootstrap(metric: str, higher_is_better: bool, corpus_score) -> dict:
        return {"metric": metric, "test_examples": data.get("test"),
                "resamples": cfg.diagnostics.bootstrap_resamples,
                "pairs": paired_bootstrap(per_arm, higher_is_better, cfg.diagnostics.bootstrap_resamples,
                                          pairs=pairs, corpus_score=corpus_score)}
    primary = bootstrap(spec.primary, spec.higher_is_better, getattr(task, "corpus_score", None))
    # a task whose per-example statistics also give other metrics (translation: chrF beside BLEU)
    others = {metric: bootstrap(metric, spec.tie_break_higher if metric == spec.tie_break else True, score)
              for metric, score in getattr(task, "corpus_scores", {}).items()
              if metric != spec.primary and carries(per_arm, metric, task)}
    return {
        "task": task.name, "preset": preset, "overrides": overrides, "seeds": seeds,
        "metric": spec.primary, "higher_is_better": spec.higher_is_better,
        "metrics": {spec.primary: {"higher_is_better": spec.higher_is_better},
                    spec.tie_break: {"higher_is_better": spec.tie_break_higher}},
        "environment": environment, "data": data,
        "teachers": teachers,
        "students": {arm: arms[arm] for arm in [*PAPER_ARMS, *[a for a in arms if a not in PAPER_ARMS]]},
        "best": best_arms(cfg, students, spec),
        "paired_bootstrap": primary,
        **({"paired_bootstrap_other_metrics": others} if others else {}),
        "curves": curves(students, spec),
        "wall_seconds": wall_seconds,
    }


def summarize(entry: dict) -> dict:
    runs = entry["runs"]
    metrics = [k for k in runs[0]["test"] if k != "n"]
    return {**{k: v for k, v in entry.items() if k != "runs"},
            "test": {m: spread([r["test"][m] for r in runs]) for m in metrics},
            "checkpoints": [r["checkpoint"] for r in runs],
            "alignment_accuracy": mean_or_none([r["alignment_accuracy"] for r in runs]),
            "runs": runs}


def family(cfg: ExperimentConfig, arm: str) -> str:
    """"oracle" when any of the arm's teachers is an Oracle Teacher, "conventional" when it has
    only conventional teachers, "none" for plain CTC."""
    models = {cfg.teachers[t].model for t in cfg.arms[arm].teachers}
    return "none" if not models else "oracle" if "oracle" in models else "conventional"


def example_statistics(evaluation: dict):
    """A run's per-example statistics for the paired bootstrap: the task's own (`stats`,
    e.g. BLEU's n-gram counts), or its (errors, units)."""
    if "stats" in evaluation:
        return np.asarray(evaluation["stats"], dtype=np.float64)
    return np.asarray(evaluation["errors"]), np.asarray(evaluation["units"])


def carries(per_arm: dict, metric: str, task) -> bool:
    """Whether every run's statistics have the columns `metric` is scored from (run folders
    evaluated before a task added a metric's statistics do not)."""
    width = task.stats_columns[metric]
    return all(isinstance(run, np.ndarray) and run.shape[1] >= width for runs in per_arm.values() for run in runs)


def comparison_pairs(cfg: ExperimentConfig, arms: list[str]) -> list[tuple[str, str]]:
    """Every arm against plain CTC, and every Oracle arm against every conventional-teacher arm."""
    pairs = [(arm, "student_ctc") for arm in arms if arm != "student_ctc"]
    oracle = [a for a in arms if family(cfg, a) == "oracle"]
    conventional = [a for a in arms if family(cfg, a) == "conventional"]
    return pairs + list(itertools.product(oracle, conventional))


def best_arms(cfg: ExperimentConfig, students: dict, spec) -> dict:
    """The best arm of each family by its chosen grid point's validation score (seed 0):
    chosen on validation, never on test."""
    best = {}
    for fam in ("oracle", "conventional", "none"):
        arms = [a for a in students if family(cfg, a) == fam]
        if arms:
            score = {a: students[a]["runs"][0]["validation"][spec.primary] for a in arms}
            best[fam] = max(arms, key=lambda a: score[a] if spec.higher_is_better else -score[a])
    return best


def curves(students: dict, spec) -> dict:
    """How many epochs each arm needs to reach plain CTC's final validation score (the mean
    over seeds of its best validation score)."""
    ctc = students.get("student_ctc")
    if not ctc:
        return {}
    target = statistics.fmean(r["validation"][spec.primary] for r in ctc["runs"])
    out = {}
    for arm, entry in students.items():
        runs = [epochs_to_reach(r["history"], f"val_{spec.primary}", target, spec.higher_is_better) for r in entry["runs"]]
        ranked = sorted(runs, key=lambda e: float("inf") if e is None else e)  # a seed that never reaches it is slowest
        out[arm] = {"runs": runs, "median": ranked[(len(ranked) - 1) // 2] if len(ranked) % 2 else median_of_two(ranked)}
    return {"target": target, "target_from": "student_ctc", "epochs_to_target": out}


def median_of_two(ranked: list) -> float | None:
    a, b = ranked[len(ranked) // 2 - 1], ranked[len(ranked) // 2]
    return None if a is None or b is None else (a + b) / 2


def mean_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def portable(results, out) -> dict:
    """`results` with every path under OUT written relative to it (checkpoints, run folders)
    and the data folder by its name alone: a results.json can be published as it is."""
    root = str(out).rstrip("/") + "/"

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and value.startswith(root):
            return value[len(root):]
        return value

    found = walk(results)
    if isinstance(found.get("data", {}).get("path"), str):
        found["data"]["path"] = found["data"]["path"].rstrip("/").rsplit("/", 1)[-1]
    return found
