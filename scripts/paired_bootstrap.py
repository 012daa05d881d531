"""Are the student arms' differences larger than the test set's own noise?

A paired bootstrap over test examples (Koehn, 2004; oracle_kd.stats.paired_bootstrap):
every student checkpoint of a finished experiment decodes the test split once;
each resample of the test examples scores every arm on the same examples (the
arm's score is the mean of its seeds' corpus scores), and the difference between
two arms is counted over 2,000 resamples. Seed-to-seed spread is the other half
of the noise and is in results.json; this adds the half that comes from which
examples the test split happens to hold.

    python scripts/paired_bootstrap.py ~/runs/full            # writes OUT/paired_bootstrap.json
    python scripts/paired_bootstrap.py ~/runs/full --pair student_kd_oracle student_ctc
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from oracle_kd import diagnostics
from oracle_kd.checkpoint import load_model
from oracle_kd.config import apply_overrides, load_preset
from oracle_kd.experiment import default_cache
from oracle_kd.plots import locate_checkpoint
from oracle_kd.skips import SkipLog
from oracle_kd.stats import paired_bootstrap
from oracle_kd.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a finished experiment folder (with results.json)")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--pair", nargs=2, action="append", metavar=("FIRST", "SECOND"),
                        help="arms to compare, first minus second (repeatable; default: every pair of arms)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = json.loads((args.out / "results.json").read_text())
    task = get_task(results["task"])
    cfg = apply_overrides(load_preset(results["task"], results["preset"]), results.get("overrides") or None)
    folder = task.prepare_data(cfg["data"], args.cache or default_cache(), progress=False)
    test = task.dataset(folder, "test", SkipLog(), train=False)

    arms = list(dict.fromkeys(a for pair in args.pair for a in pair)) if args.pair else list(results["students"])
    per_arm = {}
    for arm in arms:
        per_arm[arm] = []
        for run in results["students"][arm]["runs"]:
            checkpoint = locate_checkpoint(run["checkpoint"], args.out)
            if checkpoint is None:
                raise SystemExit(f"paired_bootstrap: checkpoint of {arm} seed {run['seed']} not found "
                                 f"({run['checkpoint']}, nor its path's tail under {args.out})")
            _, model, _ = load_model(checkpoint)
            decoded = diagnostics.decode(task, model, test)
            per_arm[arm].append(task.example_errors(decoded.texts, decoded.references))
    found = {"metric": task.metric, "test_examples": len(test), "resamples": args.resamples,
             "pairs": paired_bootstrap(per_arm, task.higher_is_better, args.resamples,
                                       pairs=[tuple(p) for p in args.pair] if args.pair else None)}
    (args.out / "paired_bootstrap.json").write_text(json.dumps(found, indent=1))
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
