"""The teacher output store: keyed by teacher and data, frame counts kept, top-k for large vocabularies."""

import numpy as np
import pytest
import torch
from torch import nn

from oracle_kd.checkpoint import save_model
from oracle_kd.data import Batch, ListDataset
from oracle_kd.io import InputError
from oracle_kd.store import TeacherOutputs, check_frames, teacher_outputs


class FrameTask:
    """A task whose sources are already frame log-probs (batch, frames, classes), one example per row."""

    name = "scene-text"  # checkpoints name a real task; build_model is what the store calls

    def collate(self, examples):
        n = max(len(e["frames"]) for e in examples)
        sources = torch.zeros(len(examples), n, 3)
        for row, e in enumerate(examples):
            sources[row, : len(e["frames"])] = torch.tensor(e["frames"])
        lengths = torch.tensor([len(e["frames"]) for e in examples])
        return Batch(sources, lengths, torch.ones(len(examples), 1, dtype=torch.long), torch.ones(len(examples), dtype=torch.long),
                     [e["text"] for e in examples], torch.arange(len(examples)))


class Identity(nn.Module):
    """A 'teacher' that returns its sources as log-probs: the stored values are known in advance."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, sources, source_lengths, targets=None, target_lengths=None):
        return sources * self.scale, source_lengths


def dataset():
    probs = [[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], [[0.2, 0.2, 0.6]]]  # two examples, 2 and 1 frames
    return ListDataset([{"frames": np.log(p).tolist(), "text": "a", "source": f"ex{i}"} for i, p in enumerate(probs)])


@pytest.fixture
def teachers(tmp_path, monkeypatch):
    from oracle_kd import checkpoint

    monkeypatch.setattr(checkpoint, "load_model", lambda path, device="cpu": (FrameTask(), Identity(), {"kind": "t"}))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(a, Identity(), {"task": "scene-text", "kind": "conventional"})
    model_b = Identity()
    with torch.no_grad():
        model_b.scale.fill_(2.0)  # other weights: another teacher
    save_model(b, model_b, {"task": "scene-text", "kind": "conventional"})
    return a, b


def test_each_example_keeps_its_own_frames_in_float16(tmp_path, teachers):
    out = teacher_outputs(tmp_path / "store", teachers[0], FrameTask(), dataset())
    first, n = out[0]
    assert n == 2 and first.shape == (2, 3) and np.allclose(np.exp(first), [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], atol=1e-3)
    second, n = out[1]
    assert n == 1 and second.shape == (1, 3)  # not the batch's padding
    assert out.meta["examples"] == 2 and out.meta["bytes"] > 0 and out.meta["dtype"] == "float16"
    # argmax blank on frame 0 of example 0 only: 1 of 3 frames
    assert out.meta["posteriors"]["frames"] == 3 and out.meta["posteriors"]["blank_fraction"] == pytest.approx(1 / 3)


def test_another_teacher_or_other_data_never_reuses_an_entry(tmp_path, teachers):
    store = tmp_path / "store"
    a = teacher_outputs(store, teachers[0], FrameTask(), dataset())
    again = teacher_outputs(store, teachers[0], FrameTask(), dataset())
    assert again.folder == a.folder  # computed once
    other = teacher_outputs(store, teachers[1], FrameTask(), dataset())  # same file name pattern, other bytes
    assert other.folder != a.folder
    smaller = ListDataset(dataset().examples[:1])
    assert teacher_outputs(store, teachers[0], FrameTask(), smaller).folder != a.folder


def test_top_k_keeps_the_k_best_labels_and_spreads_the_rest(tmp_path, teachers):
    out = teacher_outputs(tmp_path / "store", teachers[0], FrameTask(), dataset(), top_k=1)
    dense, n = out[0]
    # frame 0: 0.7 kept; the other two share 0.3 evenly: 0.15 each
    assert np.allclose(np.exp(dense[0]), [0.7, 0.15, 0.15], atol=1e-3)
    assert np.allclose(np.exp(dense[1]), [0.1, 0.8, 0.1], atol=1e-3)
    assert isinstance(out, TeacherOutputs) and out.meta["top_k"] == 1


def test_a_teacher_with_another_frame_rate_is_an_error_naming_both():
    with pytest.raises(InputError, match="teacher conv gives 16 frames for example 7, the student 32"):
        check_frames("conv", torch.tensor([32, 16]), torch.tensor([32, 32]), torch.tensor([3, 7]))
