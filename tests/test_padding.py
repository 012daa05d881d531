"""Batch padding of label ids and label spans, worked out by hand."""

import math

import numpy as np
import torch

from oracle_kd.data import pad_targets
from oracle_kd.tasks.spans import pad_label_spans


def test_pad_targets_pads_each_row_with_zeros_after_its_ids():
    targets, lengths = pad_targets([[3, 1, 2], [], [5]])
    assert targets.dtype == torch.long and lengths.dtype == torch.long
    assert targets.tolist() == [[3, 1, 2], [0, 0, 0], [5, 0, 0]]
    assert lengths.tolist() == [3, 0, 1]
    targets, lengths = pad_targets([[], []])  # no labels at all: still one column
    assert targets.tolist() == [[0], [0]] and lengths.tolist() == [0, 0]


def test_pad_label_spans_fills_nan_where_a_span_is_unknown():
    examples = [{"label_spans": np.array([[0.0, 1.5], [2.0, 3.0]], dtype=np.float32)},
                {"label_spans": torch.tensor([[4.0, 5.0], [6.0, 7.0], [8.0, 9.0]])},  # cut to max_labels
                {}]
    spans = pad_label_spans(examples, max_labels=2)
    assert spans.shape == (3, 2, 2) and spans.dtype == torch.float32
    assert spans[0].tolist() == [[0.0, 1.5], [2.0, 3.0]]
    assert spans[1].tolist() == [[4.0, 5.0], [6.0, 7.0]]
    assert all(math.isnan(v) for v in spans[2].flatten().tolist())
    assert pad_label_spans([{"text": "a"}], 1) is None  # examples without spans: none



def test_pad_waveforms_scales_int16_pcm_into_its_row_and_pads_with_zeros():
    from oracle_kd.tasks.speech.task import float_samples, pad_waveforms

    pcm = np.array([-32768, 16384, 1, 32767], dtype=np.int16)  # / 32768: -1, 0.5, 2**-15, 1 - 2**-15
    exact = [-1.0, 0.5, 2.0 ** -15, 1 - 2.0 ** -15]
    audio, lengths = pad_waveforms([{"audio": pcm}, {"audio": np.array([0.25, -0.5], dtype=np.float32)}])
    assert audio.dtype == torch.float32 and lengths.tolist() == [4, 2]
    assert audio.tolist() == [exact, [0.25, -0.5, 0.0, 0.0]]  # float32 holds each of these exactly
    assert float_samples(pcm).tolist() == exact and float_samples(pcm).dtype == np.float32
    floats = np.array([0.1, 0.2], dtype=np.float64)
    assert float_samples(floats).dtype == np.float32
    assert float_samples(floats).tolist() == floats.astype(np.float32).tolist()
