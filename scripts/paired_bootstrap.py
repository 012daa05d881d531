"""Are the student arms' differences larger than the test set's own noise?

A paired bootstrap over test examples (Koehn, 2004): every student checkpoint of
a finished experiment decodes the test split once; each resample of the test
examples scores every arm on the same examples (the arm's score is the mean of
its seeds' corpus scores), and the difference between two arms is counted
over 2,000 resamples. Seed-to-seed spread is the other half of the noise and
is in results.json; this adds the half that comes from which examples the test
split happens to hold.

    python scripts/paired_bootstrap.py ~/runs/full            # writes OUT/paired_bootstrap.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from oracle_kd import diagnostics
from oracle_kd.checkpoint import load_model
from oracle_kd.config import apply_overrides, load_preset
from oracle_kd.experiment import default_cache
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task


def example_errors(task, hypotheses: list[str], references: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(errors, units) per example, so that a corpus error rate is errors.sum() / units.sum():
    a wrong word (word accuracy), or word edits over reference words (WER)."""
    errors, units = [], []
    for hyp, ref in zip(hypotheses, references):
        score = task.score([hyp], [ref])[task.metric]
        if task.higher_is_better:  # an accuracy over examples
            errors.append(1.0 - score)
            units.append(1.0)
        else:  # an error rate over reference words
            n = max(1, len(ref.split()))
            errors.append(score * n)
            units.append(n)
    return np.array(errors), np.array(units)


def paired_bootstrap(per_arm: dict[str, list[tuple[np.ndarray, np.ndarray]]], higher_is_better: bool,
                     resamples: int = 2000, seed: int = 0) -> dict:
    """For every pair of arms: the observed difference of their task metric (first minus second,
    seed means), its 95 % interval over resamples, and how often the first arm was not better."""
    n = len(next(iter(per_arm.values()))[0][0])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))

    def metric(runs, rows):  # mean over seeds of each seed's corpus score on `rows`
        rates = [e[rows].sum(axis=-1) / u[rows].sum(axis=-1) for e, u in runs]
        rate = np.mean(rates, axis=0)
        return 1.0 - rate if higher_is_better else rate

    everything = np.arange(n)
    out = {}
    for a, b in itertools.combinations(per_arm, 2):
        observed = float(metric(per_arm[a], everything) - metric(per_arm[b], everything))
        diffs = metric(per_arm[a], picks) - metric(per_arm[b], picks)
        a_not_better = diffs <= 0 if higher_is_better else diffs >= 0
        out[f"{a} - {b}"] = {"difference": observed, "interval_95": [float(np.percentile(diffs, 2.5)),
                                                                      float(np.percentile(diffs, 97.5))],
                             "share_first_not_better": float(a_not_better.mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a finished experiment folder (with results.json)")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = json.loads((args.out / "results.json").read_text())
    task = get_task(results["task"])
    cfg = apply_overrides(load_preset(results["task"], results["preset"]), results.get("overrides") or None)
    folder = task.prepare_data(cfg["data"], args.cache or default_cache(), progress=False)
    test = task.dataset(folder, "test", SkipLog(), train=False)

    per_arm = {}
    for arm, summary in results["students"].items():
        per_arm[arm] = []
        for run in summary["runs"]:
            checkpoint = args.out / Path(run["checkpoint"]).relative_to(Path(run["checkpoint"]).parents[3])
            _, model, _ = load_model(checkpoint)
            decoded = diagnostics.decode(task, model, test)
            per_arm[arm].append(example_errors(task, decoded.texts, decoded.references))
    found = {"metric": task.metric, "test_examples": len(test), "resamples": args.resamples,
             "pairs": paired_bootstrap(per_arm, task.higher_is_better, args.resamples)}
    (args.out / "paired_bootstrap.json").write_text(json.dumps(found, indent=1))
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
