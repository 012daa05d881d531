"""The report's plots hide nothing: one-epoch curves show every arm, spike labels do not
overlap, titles fit their panels, every example shows its reference text."""

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from oracle_kd.plots import curves_figure, fit_title, spike_labels, spikes_figure
from oracle_kd.tasks import get_task

from .conftest import TINY

ARMS = ["student_ctc", "student_kd_conventional", "student_kd_oracle"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def one_epoch_results(score=1.0):
    """Every arm and teacher stopped after one epoch with the same score: all points coincide."""
    run = {"seed": 0, "history": [{"epoch": 1, "seconds": 12.0, "val_wer": score}]}
    return {"metric": "wer", "students": {arm: {"runs": [run]} for arm in ARMS},
            "teachers": {name: {"history": run["history"]} for name in ("conventional", "oracle")}}


def overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_a_one_epoch_curve_is_a_marker_of_its_arms_own_shape_and_size():
    fig = curves_figure(one_epoch_results())
    epochs = fig.axes[0]
    lines = [line for line in epochs.get_lines() if line.get_label() in {f"{a} seed 0" for a in ARMS}]
    assert [line.get_label() for line in lines] == [f"{a} seed 0" for a in ARMS]
    for line in lines:
        assert len(line.get_xdata()) == 1 and line.get_marker() not in ("None", "", None, " ")
        assert line.get_markersize() >= 4 and line.get_markerfacecolor() == "none"  # hollow: the ones under it show
    assert len({(line.get_marker(), line.get_markersize()) for line in lines}) == len(ARMS)
    assert [line.get_markersize() for line in lines] == [10, 7, 4]  # nested outlines, the first arm outermost
    assert len(fig.axes[2].get_lines()) == 2  # both teachers


def test_spike_labels_close_together_do_not_overlap():
    fig, ax = plt.subplots(figsize=(3, 1))
    ax.set_xlim(0, 2.5)
    labels = spike_labels(ax, np.linspace(0.1, 0.6, 12), list("abcdefghijkl"), fontsize=8)
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in labels]
    assert not any(overlap(a, b) for a, b in itertools.combinations(boxes, 2))
    assert len({round(label.get_position()[1], 6) for label in labels}) > 1  # they needed more than one row
    assert [label.get_text() for label in labels] == list("abcdefghijkl")  # in x order


def test_labels_far_apart_stay_on_one_row():
    fig, ax = plt.subplots(figsize=(6, 1))
    ax.set_xlim(0, 10)
    labels = spike_labels(ax, [1, 4, 7], ["a", "b", "c"], fontsize=8)
    assert {label.get_position()[1] for label in labels} == {0.97}


def test_a_long_title_is_cut_to_its_panels_width():
    fig, axes = plt.subplots(1, 2, figsize=(8, 1))
    title = fit_title(axes[0], "student_kd_conventional: '" + "a very long hypothesis " * 8 + "'")
    renderer = fig.canvas.get_renderer()
    assert title.get_text().endswith("\u2026") and title.get_text().startswith("student_kd_conventional: 'a very")
    assert title.get_window_extent(renderer).width <= axes[0].get_window_extent(renderer).width
    assert fit_title(axes[1], "short").get_text() == "short"


def test_the_spike_figure_shows_each_examples_reference_text_above_the_models():
    torch.manual_seed(0)
    task = get_task("scene-text")
    model = task.build_model("student", TINY["student"])
    examples = [dict(e, text=text) for e, text in zip(task.example_inputs(2), ["hello", "world"])]
    fig = spikes_figure(task, {"student_ctc": model}, examples)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title(loc="left") for ax in axes[0]] == ["reference: 'hello'", "reference: 'world'"]
    assert all(ax.get_title(loc="left").startswith("student_ctc: '") for ax in axes[1])
