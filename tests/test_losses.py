"""The KD losses against values worked out by hand."""

import math

import pytest
import torch

from oracle_kd.losses import ctc, frame_kd, guided_ctc, teacher_spikes


def logp(*rows):
    """(1, frames, classes) log-probabilities from rows of probabilities."""
    return torch.tensor([rows], dtype=torch.float64).log()


def test_ctc_single_frame_is_minus_log_prob_of_the_label():
    lp = logp([0.75, 0.25])
    loss = ctc(lp, torch.tensor([1]), torch.tensor([[1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.25), abs=1e-6)


def test_ctc_sums_the_three_paths_of_one_label_over_two_frames():
    # paths a-a, a-blank, blank-a: 0.25 + 0.25 + 0.25 = 0.75, divided by target length 1
    lp = logp([0.5, 0.5], [0.5, 0.5])
    loss = ctc(lp, torch.tensor([2]), torch.tensor([[1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_ctc_infeasible_target_is_infinite_not_zero():
    lp = logp([0.5, 0.5])
    loss = ctc(lp, torch.tensor([1]), torch.tensor([[1, 1]]), torch.tensor([2]))
    assert math.isinf(loss.item())


def test_frame_kd_at_tau_1_is_the_kl_divergence():
    # KL([.5,.5] || [.25,.75]) = .5 ln 2 + .5 ln(2/3) = 0.143841
    student, teacher = logp([0.25, 0.75]), logp([0.5, 0.5])
    assert frame_kd(student, teacher, torch.tensor([1]), tau=1.0).item() == pytest.approx(0.143841, abs=1e-5)


def test_frame_kd_softens_both_sides_and_scales_by_tau_squared():
    # tau=2: student -> sqrt-normalised [0.366025, 0.633975], teacher stays uniform;
    # KL = .5 ln(.5/.366025) + .5 ln(.5/.633975) = 0.037252; times 4 = 0.149009
    student, teacher = logp([0.25, 0.75]), logp([0.5, 0.5])
    assert frame_kd(student, teacher, torch.tensor([1]), tau=2.0).item() == pytest.approx(0.149009, abs=1e-5)


def test_frame_kd_ignores_padded_frames_and_averages_valid_ones():
    student = logp([0.25, 0.75], [0.5, 0.5], [0.9, 0.1])  # the third frame is padding
    teacher = logp([0.5, 0.5], [0.5, 0.5], [0.1, 0.9])
    # (0.143841 + 0) / 2 valid frames
    assert frame_kd(student, teacher, torch.tensor([2]), tau=1.0).item() == pytest.approx(0.0719205, abs=1e-5)


def test_frame_kd_is_zero_when_student_equals_teacher():
    lp = torch.randn(3, 5, 7).log_softmax(-1)
    assert frame_kd(lp, lp, torch.tensor([5, 3, 1]), tau=3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_guided_ctc_rewards_the_teachers_label_at_its_spike_frames():
    # teacher: blank, spike of label 1, spike of label 2; student p(1|t=1)=0.6, p(2|t=2)=0.2
    teacher = logp([0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8])
    student = logp([0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.4, 0.4, 0.2])
    assert guided_ctc(student, teacher, torch.tensor([3])).item() == pytest.approx(-(0.6 + 0.2) / 2, abs=1e-6)


def test_guided_ctc_without_spikes_is_zero_and_spikes_respect_lengths():
    teacher = logp([0.8, 0.2], [0.1, 0.9])
    assert teacher_spikes(teacher, torch.tensor([1])).tolist() == [[-1, -1]]
    assert teacher_spikes(teacher, torch.tensor([2])).tolist() == [[-1, 1]]
    assert guided_ctc(logp([0.5, 0.5], [0.5, 0.5]), teacher, torch.tensor([1])).item() == 0.0
