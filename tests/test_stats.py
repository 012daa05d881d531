"""Seed spread, the paired bootstrap and epochs to a target, against numbers worked out by hand."""

import numpy as np
import pytest

from oracle_kd.stats import epochs_to_reach, paired_bootstrap, spread


def words(wrong: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(errors, units) of a word-accuracy run: one unit per example, 1 error where wrong."""
    return np.array(wrong, dtype=float), np.ones(len(wrong))


def test_spread_is_mean_and_sample_std():
    # mean 0.89; deviations -0.01, 0, +0.01: sum of squares 0.0002 over n - 1 = 2 -> variance 0.0001, std 0.01
    found = spread([0.88, 0.89, 0.90])
    assert found["mean"] == pytest.approx(0.89) and found["std"] == pytest.approx(0.01)
    assert found["runs"] == [0.88, 0.89, 0.90]
    assert spread([0.5]) == {"mean": 0.5, "std": 0.0, "runs": [0.5]}


def test_bootstrap_difference_that_no_resample_can_change():
    # A right on all 4 examples, B wrong on all 4: accuracy 1 against 0 on every resample
    found = paired_bootstrap({"A": [words([0, 0, 0, 0])], "B": [words([1, 1, 1, 1])]}, higher_is_better=True)
    assert found == {"A - B": {"difference": 1.0, "interval_95": [1.0, 1.0], "share_first_not_better": 0.0}}


def test_bootstrap_one_wrong_example_of_four():
    # A always right, B wrong on example 0 only: observed accuracy 1 - 0.75 = 0.25. A resample
    # differs by (times example 0 was drawn) / 4 >= 0, and is a tie exactly when example 0 is
    # never drawn: (3/4)^4 = 81/256 = 0.316 of resamples (binomial sd over 2,000: 0.010).
    found = paired_bootstrap({"A": [words([0, 0, 0, 0])], "B": [words([1, 0, 0, 0])]}, higher_is_better=True)
    pair = found["A - B"]
    assert pair["difference"] == pytest.approx(0.25)
    low, high = pair["interval_95"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0
    assert pair["share_first_not_better"] == pytest.approx(81 / 256, abs=0.03)


def test_bootstrap_error_rate_is_a_ratio_of_sums_and_lower_is_better():
    # WER over reference words: B has one more edit than A on each of two utterances of 1 and 3 words.
    # Observed: A 0 / 4 = 0, B 2 / 4 = 0.5 (the mean of per-utterance rates would be 2/3): A - B = -0.5.
    # A resample of two utterances gives -2 / (words drawn): both the 1-word one -1 (1/4 of resamples),
    # one of each -0.5 (1/2), both the 3-word one -1/3 (1/4). So A is better on every resample, and the
    # 2.5 and 97.5 percentiles are the extremes -1 and -1/3.
    a = (np.array([0.0, 0.0]), np.array([1.0, 3.0]))
    b = (np.array([1.0, 1.0]), np.array([1.0, 3.0]))
    pair = paired_bootstrap({"A": [a], "B": [b]}, higher_is_better=False, resamples=500)["A - B"]
    assert pair["difference"] == pytest.approx(-0.5)
    assert pair["share_first_not_better"] == 0.0
    assert pair["interval_95"] == pytest.approx([-1.0, -1 / 3])


def test_bootstrap_averages_each_seeds_corpus_score():
    # A's seeds: 3/4 and 2/4 right -> mean 0.625; B always right -> A - B = -0.375, and A is never better
    a = [words([1, 0, 0, 0]), words([1, 1, 0, 0])]
    pair = paired_bootstrap({"A": a, "B": [words([0, 0, 0, 0])] * 2}, higher_is_better=True)["A - B"]
    assert pair["difference"] == pytest.approx(-0.375)
    assert pair["share_first_not_better"] == 1.0


def test_bootstrap_pairs_default_to_every_combination_and_can_be_chosen():
    arms = {name: [words([i % 2, 0, 1, 0])] for i, name in enumerate(["ctc", "kd_c", "kd_o"])}
    assert list(paired_bootstrap(arms, True, resamples=50)) == ["ctc - kd_c", "ctc - kd_o", "kd_c - kd_o"]
    chosen = paired_bootstrap(arms, True, resamples=50, pairs=[("kd_o", "ctc")])
    assert list(chosen) == ["kd_o - ctc"]
    assert chosen["kd_o - ctc"]["difference"] == pytest.approx(0.0)  # same errors: 0.5 - 0.5
    assert chosen == paired_bootstrap(arms, True, resamples=50, pairs=[("kd_o", "ctc")])  # seeded: repeatable


def test_bootstrap_refuses_arms_over_different_examples():
    with pytest.raises(ValueError, match="same test examples"):
        paired_bootstrap({"A": [words([0, 0])], "B": [words([0, 0, 1])]}, True)
    with pytest.raises(ValueError, match="without errors"):
        paired_bootstrap({"A": [words([0, 0])], "B": [words([0, 1])]}, True, pairs=[("A", "C")])


def test_epochs_to_reach_the_first_epoch_at_or_past_the_target():
    history = [{"epoch": 1, "val_word_accuracy": 0.5}, {"epoch": 2, "val_word_accuracy": 0.8},
               {"epoch": 3, "val_word_accuracy": 0.9}]
    assert epochs_to_reach(history, "val_word_accuracy", 0.8, True) == 2  # reaching counts: 0.8 >= 0.8
    assert epochs_to_reach(history, "val_word_accuracy", 0.85, True) == 3
    assert epochs_to_reach(history, "val_word_accuracy", 0.95, True) is None
    cer = [{"epoch": 1, "val_cer": 0.5}, {"epoch": 2}, {"epoch": 3, "val_cer": 0.3}]  # epoch 2 not validated
    assert epochs_to_reach(cer, "val_cer", 0.3, False) == 3
    assert epochs_to_reach(cer, "val_cer", 0.6, False) == 1 and epochs_to_reach([], "val_cer", 1.0, False) is None
