"""The numbers results.json reports beside raw metrics, as pure functions:
seed spread, a paired bootstrap between arms over test examples, and how many
epochs a learning curve needs to reach a target score.
"""

from __future__ import annotations

import itertools
import statistics

import numpy as np

ROWS_PER_CHUNK = 256  # resamples scored at once: bounds the (rows, examples) temporaries to ~10 MB at 5,000 examples


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values themselves,
    as results.json holds every test metric of a student arm."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def paired_bootstrap(per_arm: dict[str, list], higher_is_better: bool, resamples: int = 2000, seed: int = 0,
                     pairs: list[tuple[str, str]] | None = None, corpus_score=None) -> dict:
    """Paired bootstrap over test examples (Koehn, 2004) between student arms.

    per_arm: arm -> one entry per seed, each over the same test examples in the same
    order: an (errors, units) pair of arrays, so that a seed's corpus error rate is
    errors.sum() / units.sum() (a wrong word with unit 1 for word accuracy; word edits
    over reference words for WER); or an (examples, k) array of per-example statistics
    whose column sums `corpus_score` turns into the metric (BLEU's n-gram counts). An
    arm's score on a resample is the mean over its seeds of each seed's corpus score on
    that resample (1 - the error rate when higher_is_better, for error pairs). Every arm
    is scored on the same resamples.

    pairs: (first, second) arms to compare; default every combination in the
    order of per_arm. Returns "first - second" -> {"difference": observed score of
    first minus second on the whole test set, "interval_95": 2.5 and 97.5
    percentiles of the resampled differences, "share_first_not_better": the
    share of resamples where first does not beat second (a tie counts)}.
    """
    per_arm = {arm: [as_statistics(run) for run in runs] for arm, runs in per_arm.items()}
    corpus_score = corpus_score or error_rate_score(higher_is_better)
    n = check_examples(per_arm)
    pairs = list(itertools.combinations(per_arm, 2)) if pairs is None else [tuple(p) for p in pairs]
    unknown = {arm for pair in pairs for arm in pair} - set(per_arm)
    if unknown:
        raise ValueError(f"pairs name arms without errors: {sorted(unknown)}")
    # drawn in one call, as scripts/paired_bootstrap.py always did: the same seed gives the same resamples
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    needed = list(dict.fromkeys(arm for pair in pairs for arm in pair))
    observed = {arm: float(score(per_arm[arm], np.arange(n), corpus_score)) for arm in needed}
    resampled = {arm: np.concatenate([score(per_arm[arm], picks[i:i + ROWS_PER_CHUNK], corpus_score)
                                      for i in range(0, resamples, ROWS_PER_CHUNK)]) for arm in needed}
    out = {}
    for first, second in pairs:
        diffs = resampled[first] - resampled[second]
        not_better = diffs <= 0 if higher_is_better else diffs >= 0
        out[f"{first} - {second}"] = {
            "difference": observed[first] - observed[second],
            "interval_95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
            "share_first_not_better": float(not_better.mean()),
        }
    return out


def as_statistics(run) -> np.ndarray:
    """(examples, k) float array of one seed's per-example statistics; an (errors, units) pair is k = 2."""
    if isinstance(run, tuple):
        return np.column_stack([np.asarray(run[0], dtype=np.float64), np.asarray(run[1], dtype=np.float64)])
    return np.asarray(run, dtype=np.float64).reshape(len(run), -1)


def error_rate_score(higher_is_better: bool):
    """corpus_score of (errors, units) statistics: the error rate, or 1 - it for an accuracy."""
    def rate(sums):
        value = sums[..., 0] / sums[..., 1]
        return 1.0 - value if higher_is_better else value
    return rate


def score(runs: list[np.ndarray], rows: np.ndarray, corpus_score) -> np.ndarray:
    """Mean over seeds of each seed's corpus score on the examples `rows` ((n,) for one
    set of examples, a scalar out; (resamples, n), one score per resample)."""
    scores = [corpus_score(np.stack([column[rows].sum(axis=-1) for column in stats.T], axis=-1)) for stats in runs]
    return np.mean(scores, axis=0)


def check_examples(per_arm: dict) -> int:
    """The number of test examples, the same for every seed of every arm."""
    sizes = {arm: {len(stats) for stats in runs} for arm, runs in per_arm.items()}
    empty = [arm for arm, runs in per_arm.items() if not runs]
    if not per_arm or empty:
        raise ValueError(f"every arm needs the errors of at least one seed (none for: {empty or 'any arm'})")
    lengths = set().union(*sizes.values())
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"every seed of every arm must cover the same test examples; lengths found: {sizes}")
    return lengths.pop()


def epochs_to_reach(history: list[dict], key: str, target: float, higher_is_better: bool) -> int | None:
    """The first epoch whose `key` (e.g. "val_word_accuracy") reaches `target` (>= when
    higher is better, <= otherwise); None if none does. Rows without `key` are skipped."""
    for row in history:
        value = row.get(key)
        if value is not None and (value >= target if higher_is_better else value <= target):
            return int(row["epoch"])
    return None
