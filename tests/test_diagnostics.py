"""Diagnostics checked against numbers worked out by hand: what a teacher hands its
students, where its spikes fall, and whether it copies its target (PAPER.md)."""

import numpy as np
import pytest
import torch

from oracle_kd.data import Batch, pad_targets
from oracle_kd.decoding import Hypothesis
from oracle_kd.diagnostics import Decoded, alignment_accuracy, copy_test, matched_pairs, posterior_summary


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


# Alignment accuracy and matched pairs: hypotheses with known spike frames against
# reference labels with known spans (frame units, [start, end), NaN unknown).

UNKNOWN = [np.nan, np.nan]


def decoded(*examples):
    """`Decoded` from (hyp ids, hyp spike frames, reference ids, spans or None) per example."""
    out = Decoded([], [], [], [], [], [])
    for hyp_ids, hyp_frames, ref_ids, spans in examples:
        out.hypotheses.append(Hypothesis(hyp_ids, hyp_frames))
        out.reference_ids.append(ref_ids)
        out.spans.append(None if spans is None else np.array(spans, dtype=np.float32))
        out.texts.append("")
        out.references.append("")
        out.frames.append(12)
    return out


@pytest.mark.parametrize("ref, hyp, pairs", [
    ([1, 2, 3], [1, 2, 3], [(0, 0), (1, 1), (2, 2)]),  # identical
    ([1, 2, 3], [1, 4, 3], [(0, 0), (2, 2)]),  # 2 substituted by 4: not a pair
    ([1, 2, 3], [1, 3], [(0, 0), (2, 1)]),  # 2 deleted: 3 pairs with the hypothesis' second label
    ([1, 3], [1, 2, 3], [(0, 0), (1, 2)]),  # 2 inserted
    ([1, 2, 3, 4, 5, 6], [7, 1, 2, 8, 4, 6], [(0, 1), (1, 2), (3, 4), (5, 5)]),  # insertion, substitution, deletion
    ([], [1, 2], []),
    ([1, 2], [], []),
])
def test_matched_pairs_are_the_equal_labels_of_a_minimum_edit_alignment(ref, hyp, pairs):
    assert matched_pairs(ref, hyp) == pairs


def test_alignment_accuracy_counts_known_reference_labels_hit_by_their_own_spike():
    # reference a b c d e f (ids 1-6); hypothesis 7 a b 8 d f: 7 inserted, c substituted by 8, e deleted
    got = alignment_accuracy(decoded((
        [7, 1, 2, 8, 4, 6], [0, 2, 4, 6, 8, 10], [1, 2, 3, 4, 5, 6],
        [[1, 4],  # a: spike centre 2.5 inside: hit
         UNKNOWN,  # b: matched, but its span is unknown: not counted at all
         [5, 7],  # c: 8's centre 6.5 lies inside, but 8 is not c: miss
         [7, 9],  # d: 8.5 inside: hit
         [9, 10],  # e: deleted: miss
         [10, 12]],  # f: 10.5 inside: hit
    )))
    assert got == pytest.approx(3 / 5)


def test_alignment_accuracy_takes_the_spike_centre_with_span_start_included_and_end_excluded():
    # spike centres (frame + 0.5) 3.5, 4.5 and 6.5: on its span's start (hit), on its span's
    # end (miss), inside a span that starts after the spike's frame but before its centre (hit)
    got = alignment_accuracy(decoded(([1, 2, 3], [3, 4, 6], [1, 2, 3], [[3.5, 5], [2, 4.5], [6.2, 7]])))
    assert got == pytest.approx(2 / 3)


def test_alignment_accuracy_pools_labels_over_examples_and_skips_those_without_spans():
    got = alignment_accuracy(decoded(
        ([1], [0], [1], [[0, 1]]),  # 1 of 1 hit
        ([1, 2, 3], [5, 6, 7], [1, 2, 3], [[0, 1], [0, 1], [0, 1]]),  # 0 of 3: every spike is too late
        ([1], [0], [1], None),  # no spans: ignored
    ))
    assert got == pytest.approx(1 / 4)  # per label, not the mean of the per-example 1 and 0


def test_alignment_accuracy_is_none_without_a_known_span():
    assert alignment_accuracy(decoded(([1], [0], [1], None), ([1], [0], [1], [UNKNOWN]))) is None


# Copy test: a fake task whose "source" is the class each frame shows ("-" the blank),
# and two fake teachers. Each emits, per frame, its chosen class with probability 1/2
# and each of the two other classes (blank, a, b) with 1/4: CTC probabilities can be
# counted by hand as sums over the few frame paths that collapse to the target.

CLASSES = "-ab"


def frame_log_probs(chosen: torch.Tensor) -> torch.Tensor:
    """(batch, frames) chosen classes -> (batch, frames, 3) log-probabilities, 1/2 chosen, 1/4 each other."""
    probs = torch.full((3, 3), 0.25) + torch.eye(3) * 0.25
    return probs[chosen].log()


class ReadsSource(torch.nn.Module):
    """Emits what its source shows; the labels are not looked at."""

    def forward(self, sources, source_lengths, targets, target_lengths):
        return frame_log_probs(sources), source_lengths


class CopiesTarget(torch.nn.Module):
    """Emits the target by position, then blanks; only the source's length is used."""

    def forward(self, sources, source_lengths, targets, target_lengths):
        chosen = torch.zeros_like(sources)  # blank; `targets` is padded with the blank too
        n = min(sources.shape[1], targets.shape[1])
        chosen[:, :n] = targets[:, :n]
        return frame_log_probs(chosen), source_lengths


class FakeTask:
    @staticmethod
    def collate(examples: list[tuple[str, str]]) -> Batch:
        """(text, source) pairs, the source as one class character per frame."""
        targets, target_lengths = pad_targets([[CLASSES.index(c) for c in text] for text, _ in examples])
        sources, source_lengths = pad_targets([[CLASSES.index(c) for c in source] for _, source in examples])
        return Batch(sources, source_lengths, targets, target_lengths, [text for text, _ in examples],
                     torch.arange(len(examples)))


# Each example's x' is the previous example's source (torch.roll): row 0 gets the last.
SAME_TEXT_TWICE = [("ab", "ab"), ("ab", "ab"), ("ba", "ba")]  # row 1's x' shows its own text: excluded
SHORT_SOURCE = [("ab", "ab"), ("ba", "ba"), ("a", "a")]  # row 0's x' has 1 frame, "ab" needs 2: excluded


def test_copy_test_of_a_teacher_that_reads_its_source():
    got = copy_test(FakeTask(), ReadsSource(), SAME_TEXT_TWICE)
    # matched: the one path of 2 labels in 2 frames, each frame 1/2: -log(1/4) / 2 labels = log 2.
    # mismatched (row 0: "ab" on source "ba", row 2: "ba" on "ab"): each frame 1/4, -log(1/16) / 2 = 2 log 2
    assert got["matched_loss"] == pytest.approx(np.log(2), rel=1e-5)
    assert got["mismatched_loss"] == pytest.approx(2 * np.log(2), rel=1e-5)
    assert got["mismatched_decoded_as_target"] == 0.0  # it decodes the other source's text
    # row 1, "ab" on the other "ab" source, would have been decoded as its target: not a pair
    assert got["pairs"] == 2


def test_copy_test_of_a_teacher_that_copies_its_target_finds_no_gap():
    got = copy_test(FakeTask(), CopiesTarget(), SAME_TEXT_TWICE)
    # every source has 2 frames and every target 2 labels: the copier emits y on any x, loss log 2 as above
    assert got["matched_loss"] == pytest.approx(np.log(2), rel=1e-5)
    assert got["mismatched_loss"] == pytest.approx(np.log(2), rel=1e-5)
    assert got["mismatched_decoded_as_target"] == 1.0
    assert got["pairs"] == 2


def test_copy_test_leaves_out_sources_too_short_for_the_target():
    got = copy_test(FakeTask(), ReadsSource(), SHORT_SOURCE)
    # matched: "ab" on "ab" and "ba" on "ba" as above (log 2); "a" on "a": -log(1/2) / 1 = log 2.
    # mismatched, row 1, "ba" on "ab": -log(1/16) / 2 = 2 log 2.
    # row 2, "a" on "ba", frames showing b then a; paths aa + a- + -a:
    #   1/4 * 1/2 + 1/4 * 1/4 + 1/4 * 1/2 = 5/16, so -log(5/16) / 1 label.
    assert got["matched_loss"] == pytest.approx(np.log(2), rel=1e-5)
    assert got["mismatched_loss"] == pytest.approx((2 * np.log(2) + np.log(16 / 5)) / 2, rel=1e-5)
    assert got["pairs"] == 2


def test_copy_test_of_a_copier_given_a_longer_source_still_decodes_the_target():
    got = copy_test(FakeTask(), CopiesTarget(), SHORT_SOURCE)
    # mismatched row 1, "ba" on a 2-frame source: copied exactly, -log(1/4) / 2 = log 2.
    # row 2, "a" on a 2-frame source: the copier emits a then blank; paths aa + a- + -a:
    #   1/2 * 1/4 + 1/2 * 1/2 + 1/4 * 1/4 = 7/16
    assert got["mismatched_loss"] == pytest.approx((np.log(2) + np.log(16 / 7)) / 2, rel=1e-5)
    assert got["mismatched_decoded_as_target"] == 1.0
