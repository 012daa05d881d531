"""Summaries of what a teacher hands its students, checked against numbers worked out by hand."""

import numpy as np
import pytest

from oracle_kd.diagnostics import posterior_summary


def test_posterior_summary_counts_real_frames_only():
    # two examples, three frames each over (blank, a, b); the second example has one frame of padding
    sure_blank = np.log([1.0 - 2e-6, 1e-6, 1e-6])
    mostly_a = np.log([0.4, 0.6, 1e-12])
    even = np.log([1 / 3, 1 / 3, 1 / 3])
    log_probs = np.stack([np.stack([sure_blank, mostly_a, even]),
                          np.stack([mostly_a, sure_blank, np.zeros(3)])]).astype(np.float16)
    h = -(0.4 * np.log(0.4) + 0.6 * np.log(0.6))  # entropy of mostly_a
    got = posterior_summary(log_probs, chunk=1)  # chunks of one example: the sums run across chunks
    assert got["frames"] == 5
    assert got["blank_fraction"] == pytest.approx(3 / 5)  # sure_blank twice, and even's tie goes to the blank
    assert got["mean_top_probability"] == pytest.approx((1 + 0.6 + 1 / 3 + 0.6 + 1) / 5, abs=1e-3)
    assert got["mean_entropy"] == pytest.approx((2 * h + np.log(3)) / 5, abs=1e-3)


def test_posterior_summary_of_nothing_says_so():
    assert posterior_summary(np.zeros((2, 4, 3), np.float16))["blank_fraction"] is None


def test_posterior_summary_with_frame_lengths_leaves_out_what_follows_them():
    sure_blank, sure_a = np.log([1.0 - 1e-6, 1e-6]), np.log([1e-6, 1.0 - 1e-6])
    log_probs = np.stack([np.stack([sure_a, sure_blank, sure_blank]),
                          np.stack([sure_a, sure_a, sure_blank])]).astype(np.float16)
    got = posterior_summary(log_probs, frame_lengths=np.array([1, 2]))  # only the sure_a frames are real
    assert got["frames"] == 3 and got["blank_fraction"] == 0.0
