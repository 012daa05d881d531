"""Checkpoints round-trip and never execute code when loaded."""

import pickle

import pytest
import torch

from oracle_kd.checkpoint import load_model, read_checkpoint, save_model
from oracle_kd.io import InputError
from oracle_kd.tasks import get_task

from .conftest import TINY


def test_safetensors_checkpoint_round_trips(tmp_path):
    model = get_task("scene-text").build_model("student", TINY["student"])
    save_model(tmp_path / "m.safetensors", model, {"task": "scene-text", "kind": "student", "config": TINY["student"]})
    task, loaded, meta = load_model(tmp_path / "m.safetensors")
    assert task.name == "scene-text" and meta["kind"] == "student" and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": {}, "meta": "{}", "x": Exploit()}, f)
    with pytest.raises(InputError, match="refusing to load"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()


def test_the_cli_refuses_a_malicious_checkpoint_with_one_line(tmp_path, monkeypatch, capsys):
    from oracle_kd.cli import main

    monkeypatch.chdir(tmp_path)
    torch.save({"payload": Exploit()}, tmp_path / "evil.ckpt")
    assert main(["recognize", str(tmp_path / "evil.ckpt"), "x.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to load" in err[0]
    assert not (tmp_path / "PWNED").exists()


def test_truncated_or_foreign_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="bad.safetensors"):
        read_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="not found"):
        read_checkpoint(tmp_path / "missing.safetensors")
