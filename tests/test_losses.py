"""The KD losses against values worked out by hand."""

import math

import pytest
import torch

from oracle_kd.losses import (KD_METHODS, alignment_kd, best_path, blank_aware_frame_kd, ctc, frame_kd, guided_ctc,
                             kd_term, sequence_kd, teacher_spikes)


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


def test_blank_aware_kd_distils_only_frames_where_the_teacher_is_not_sure_of_blank():
    # frame 0: teacher blank 0.95 (> 0.9, dropped); frame 1: KL([.5,.5] || [.25,.75]) = 0.143841
    teacher = logp([0.95, 0.05], [0.5, 0.5])
    student = logp([0.5, 0.5], [0.25, 0.75])
    loss = blank_aware_frame_kd(student, teacher, torch.tensor([2]), tau=1.0)
    assert loss.item() == pytest.approx(0.143841, abs=1e-5)
    # plain frame KD averages frame 0's KL([.95,.05] || [.5,.5]) = .95 ln 1.9 + .05 ln .1 = 0.494648 in too
    assert frame_kd(student, teacher, torch.tensor([2])).item() == pytest.approx((0.143841 + 0.494648) / 2, abs=1e-5)


def test_best_path_is_the_viterbi_forced_alignment():
    # classes: blank, a, b. Target "ab" over 3 frames: a-blank-b has .8 * .6 * .8 = .384,
    # the best of the five paths (a-a-b and a-b-b: .128)
    lp = logp([0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8])
    path = best_path(lp, torch.tensor([3]), torch.tensor([[1, 2]]), torch.tensor([2]))
    assert path.tolist() == [[1, 0, 2]]


def test_best_path_puts_a_blank_between_repeated_labels():
    # "aa" over 3 frames has one path, a-blank-a, however unlikely its blank
    lp = logp([0.1, 0.8, 0.1], [0.01, 0.98, 0.01], [0.1, 0.8, 0.1])
    assert best_path(lp, torch.tensor([3]), torch.tensor([[1, 1]]), torch.tensor([2])).tolist() == [[1, 0, 1]]


def test_best_path_marks_padding_frames_and_handles_rows_of_different_lengths():
    # row 0: "a" over 2 of 3 frames: a-blank (.7 * .9) beats a-a (.7 * .05) and blank-a (.3 * .05)
    # row 1: "ab" over 3 frames as in the Viterbi test above
    lp = torch.cat([logp([0.3, 0.7, 1e-9], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]),
                    logp([0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8])])
    path = best_path(lp, torch.tensor([2, 3]), torch.tensor([[1, 0], [1, 2]]), torch.tensor([1, 2]))
    assert path.tolist() == [[1, 0, -1], [1, 0, 2]]


def test_alignment_kd_is_the_cross_entropy_on_the_teachers_best_path():
    teacher = logp([0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8])  # best path a, blank, b
    student = logp([0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25])
    loss = alignment_kd(student, teacher, torch.tensor([3]), torch.tensor([[1, 2]]), torch.tensor([2]))
    assert loss.item() == pytest.approx(-(math.log(0.25) + math.log(0.5) + math.log(0.25)) / 3, abs=1e-6)


def test_sequence_kd_is_ctc_on_the_teachers_greedy_decode():
    # the teacher's argmax a, blank decodes to "a"; the student's CTC on "a" over two
    # uniform frames sums three paths: -ln .75 (whatever the true labels were)
    teacher = logp([0.2, 0.8], [0.9, 0.1])
    student = logp([0.5, 0.5], [0.5, 0.5])
    assert sequence_kd(student, teacher, torch.tensor([2])).item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_every_kd_method_is_reachable_by_name_and_an_unknown_one_is_refused():
    teacher = logp([0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8])
    student = logp([0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25])
    args = (student, teacher, torch.tensor([3]), torch.tensor([[1, 2]]), torch.tensor([2]))
    for method in KD_METHODS:
        assert torch.isfinite(kd_term(method, *args))
    with pytest.raises(ValueError, match="unknown KD method"):
        kd_term("frame_kd", *args)
