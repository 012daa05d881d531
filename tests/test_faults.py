"""Faults: a full disk or a killed write never leaves a file a later run would trust, a
folder holding another run is refused by name, and the same run gives the same numbers."""

import errno
import json
from pathlib import Path

import pytest
import torch

from oracle_kd.io import DiskFull, InputError, atomic_write_json, atomic_write_text
from oracle_kd.tasks import get_task
from oracle_kd.training import TrainConfig, check_run_folder, fit

from .conftest import TINY
from .test_training import tiny_data


def test_a_full_disk_leaves_the_old_file_and_says_which_write_needed_how_much(tmp_path, monkeypatch):
    target = tmp_path / "history.json"
    target.write_text("old and complete\n")
    real_write = Path.write_bytes

    def half_then_full(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(DiskFull) as full:
        atomic_write_text(target, "y" * 1000)
    message = str(full.value)
    assert message.startswith(f"writing {target} failed: no space left on the device (it needs 1,000 bytes; ")
    assert "bytes free there" in message and "\n" not in message
    assert target.read_text() == "old and complete\n"  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]  # no partial temporary file


def test_a_full_disk_while_saving_weights_leaves_no_checkpoint(tmp_path, monkeypatch):
    from oracle_kd import checkpoint

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # part of a checkpoint, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    model = get_task("scene-text").build_model("student", TINY["student"])
    # 8,377 float32 weights and 5 int64 batch-norm step counters: 4 x 8,377 + 8 x 5 = 33,548 bytes
    with pytest.raises(DiskFull, match=r"best.safetensors failed: no space left on the device \(it needs 33,548 bytes"):
        checkpoint.save_model(tmp_path / "best.safetensors", model, {"task": "scene-text", "kind": "student"})
    assert list(tmp_path.iterdir()) == []  # nothing was left behind


def test_the_cli_reports_a_full_disk_in_one_line(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from oracle_kd.cli import main
    from oracle_kd.tasks.scene_text.formats import write_labels_tsv

    import numpy as np

    write_labels_tsv(tmp_path / "data", [np.full((32, 90), 180, np.uint8)], ["word"])
    real_write = Path.write_bytes

    def full_for_metrics(self, data):
        if self.name.startswith(".metrics.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_metrics)
    code = main(["evaluate", str(tiny_checkpoint), "--data", str(tmp_path / "data"), "--json-out",
                 str(tmp_path / "metrics.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"oracle-kd: error: writing {tmp_path / 'metrics.json'} failed: no space left")
    assert not (tmp_path / "metrics.json").exists()


def test_a_write_stopped_midway_leaves_no_file_under_the_final_name(tmp_path):
    class Killed(BaseException):
        pass

    from oracle_kd.io import atomic_path

    with pytest.raises(Killed):
        with atomic_path(tmp_path / "result.json") as tmp:
            tmp.write_text('{"checkpoint": ')
            raise Killed
    assert list(tmp_path.iterdir()) == []


# --- run folders -------------------------------------------------------------


IDENTITY = {"task": "scene-text", "kind": "student", "model": TINY["student"], "train": {"lr": 0.001},
            "kd": [{"method": "frame", "teacher": "t.safetensors", "tau": 2.0, "weight": 1.0}],
            "teachers": {"t.safetensors": "digest-a"}, "data": {"train": "d1", "val": "d2"}, "seed": 0}


@pytest.mark.parametrize("change, named", [
    ({"task": "speech", "kind": "oracle", "model": {"d_model": 32}}, "its task, kind, model differ"),  # another task's run
    ({"kd": [{**IDENTITY["kd"][0], "tau": 1.0}]}, "its kd differs"),  # a changed --tau
    ({"teachers": {"t.safetensors": "digest-b"}}, "its teachers differ"),  # the same teacher path, retrained
])
def test_a_run_folder_refuses_another_run_naming_the_difference(tmp_path, change, named):
    check_run_folder(tmp_path, IDENTITY)
    with pytest.raises(InputError, match=f"holds another run \\({named}\\); use another --out"):
        check_run_folder(tmp_path, {**IDENTITY, **change})
    check_run_folder(tmp_path, json.loads(json.dumps(IDENTITY)))  # the same run is accepted


# --- determinism -------------------------------------------------------------


def test_the_same_seed_config_and_threads_give_the_same_metrics_and_weights(tmp_path):
    from safetensors.torch import load_file

    task, data = get_task("scene-text"), tiny_data()
    cfg = TrainConfig(max_epochs=2, batch_size=8, warmup_steps=1, patience=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [fit(task, "student", TINY["student"], data, data, cfg, tmp_path / name, seed=3, progress=False)
                for name in ("a", "b")]
    finally:
        torch.set_num_threads(threads)
    timing = ("seconds", "cpu_seconds")
    a, b = ([{k: v for k, v in row.items() if k not in timing} for row in r.history] for r in runs)
    assert len(a) == 2 and a == b  # losses and validation metrics, bit for bit
    assert a[0]["train_loss"] != a[1]["train_loss"]  # and they are numbers of a run that learned, not constants
    weights = [load_file(str(tmp_path / name / "best.safetensors")) for name in ("a", "b")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
