"""Bring your own model: any student module, distilled from a checkpoint or a module of its
frame rate, through the same training run as the built-in models."""

import csv
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from oracle_kd.checkpoint import save_model
from oracle_kd.config import KDTerm, TrainConfig
from oracle_kd.distil import distil
from oracle_kd.io import InputError
from oracle_kd.tasks import get_task
from oracle_kd.tasks.scene_text.formats import write_labels_tsv

from .conftest import TINY
from .test_training import tiny_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "distil_own_model.py"
CFG = TrainConfig(max_epochs=2, batch_size=8, warmup_steps=1, patience=5)


def example_module():
    spec = importlib.util.spec_from_file_location("distil_own_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Strided(torch.nn.Module):
    """A minimal CTC model: one linear map per `stride`-pixel column."""

    def __init__(self, stride=4, classes=37):
        super().__init__()
        self.stride, self.head = stride, torch.nn.Linear(32 * stride, classes)

    def forward(self, sources, source_lengths, *targets):
        columns = sources[:, 0].unfold(2, self.stride, self.stride)  # (batch, 32, frames, stride)
        columns = columns.permute(0, 2, 1, 3).flatten(2)  # (batch, frames, 32 * stride)
        return self.head(columns).log_softmax(-1), source_lengths // self.stride


def test_a_student_of_your_own_is_distilled_from_a_module_and_its_best_weights_reload(tmp_path):
    task, data = get_task("scene-text"), tiny_data()
    torch.manual_seed(0)
    student = example_module().ColumnStudent(task.tokenizer.num_classes, width=8)
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    result = distil(task, student, data, data, tmp_path / "run", teachers={"wide": Strided()}, cfg=CFG,
                    progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["kind"] == "custom" and run["model"]["module"].endswith("ColumnStudent")
    assert run["model"]["params"] == sum(p.numel() for p in student.parameters())
    assert run["kd"] == [{"method": "frame", "teacher": "wide", "tau": 1.0, "weight": 1.0}]
    with open(tmp_path / "run" / "logs" / "version_0" / "metrics.csv", newline="") as f:
        kd = [float(r["train_kd_loss_epoch"]) for r in csv.DictReader(f) if r.get("train_kd_loss_epoch")]
    assert len(kd) == 2 and all(v > 0 for v in kd)  # the KD term was part of the loss

    best = load_file(result.checkpoint)
    example_module().ColumnStudent(task.tokenizer.num_classes, width=8).load_state_dict(best)  # strict: same keys
    assert not any(torch.equal(best[k], initial[k]) for k in initial)  # every weight was trained


def test_a_teacher_of_another_frame_rate_is_refused_before_training(tmp_path):
    task, data = get_task("scene-text"), tiny_data()
    with pytest.raises(InputError, match=r"teacher coarse gives \[16, 16\] frames, the student \[32, 32\]"):
        distil(task, Strided(4), data, data, tmp_path / "run", teachers={"coarse": Strided(8)}, cfg=CFG,
               progress=False)
    assert not (tmp_path / "run").exists()


class SourcesBack(torch.nn.Module):
    def forward(self, sources, *rest):
        return sources


@pytest.mark.parametrize("model, says", [
    (Strided(4, classes=30), r"log_probs of shape \(2, 32, 30\), expected \(batch 2, frames, classes 37\)"),
    (SourcesBack(), r"forward must return \(log_probs, frame_lengths\), not Tensor"),
])
def test_a_student_that_breaks_the_contract_is_refused_naming_what_is_wrong(tmp_path, model, says):
    task, data = get_task("scene-text"), tiny_data()
    with pytest.raises(InputError, match=says):
        distil(task, model, data, data, tmp_path / "run", cfg=CFG, progress=False)


def test_log_probs_that_are_not_normalised_are_refused(tmp_path):
    class Logits(Strided):
        def forward(self, sources, source_lengths, *targets):
            log_probs, frames = super().forward(sources, source_lengths)
            return log_probs + 1.0, frames

    with pytest.raises(InputError, match="not log-softmax"):
        distil(get_task("scene-text"), Logits(), tiny_data(), tiny_data(), tmp_path / "run", cfg=CFG, progress=False)


def test_a_checkpoint_of_a_module_of_your_own_says_how_to_load_it(tmp_path, capsys):
    from oracle_kd.checkpoint import load_model
    from oracle_kd.cli import main
    from oracle_kd.distil import describe

    path = tmp_path / "best.safetensors"  # what distil writes for a module that cannot say how it is rebuilt
    save_model(path, Strided(), {"task": "scene-text", "kind": "custom", "config": describe(Strided())})
    says = (f"{path}: the weights of your own tests.test_distil.Strided (written by `distil`), which oracle-kd "
            "cannot rebuild from a file: build the module in Python and load them into it with "
            "safetensors.torch.load_file")
    with pytest.raises(InputError) as raised:
        load_model(path)
    assert str(raised.value) == says
    assert main(["evaluate", str(path), "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"oracle-kd: error: {says}\n"


def test_kd_terms_must_name_a_teacher(tmp_path):
    with pytest.raises(InputError, match="name other, which are not among the teachers"):
        distil(get_task("scene-text"), Strided(), tiny_data(), tiny_data(), tmp_path / "run",
               teachers={"wide": Strided()}, kd=[KDTerm(teacher="other")], cfg=CFG, progress=False)


def test_the_readme_example_distils_its_student_from_a_checkpoint(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example:distil_own_model:start -->\n```python\n(.*?)```\n"
                      r"<!-- example:distil_own_model:end -->", readme, re.S)
    assert block is not None and block.group(1) == EXAMPLE.read_text()

    task = get_task("scene-text")
    teacher = tmp_path / "teacher.safetensors"  # an untrained conventional CRNN: 4 pixels a frame, as the student
    save_model(teacher, task.build_model("conventional", TINY["conventional"]),
               {"task": "scene-text", "kind": "conventional", "config": TINY["conventional"]})
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6)):
        images = [rng.integers(0, 256, (32, 100), dtype=np.uint8) for _ in range(n)]
        write_labels_tsv(tmp_path / split, images, ["ab1", "c2", "xyz"] * (n // 3))
    student, result = example_module().main(str(teacher), tmp_path / "train", tmp_path / "val", tmp_path / "out",
                                            epochs=1)
    assert result.epochs == 1 and set(result.best_val) == {"word_accuracy", "cer"}
    assert str(result.best_val) in capsys.readouterr().out
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in load_file(result.checkpoint).items())
