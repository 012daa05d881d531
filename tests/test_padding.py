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

