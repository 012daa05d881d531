"""Every training run, teacher or student, logs its losses (the KD term apart), learning rate
and validation metrics to a Lightning logger in its own folder: CSV by default."""

import csv
import importlib.util

import pytest

from oracle_kd import tracking
from oracle_kd.cli import main
from oracle_kd.config import KDTerm
from oracle_kd.data import WithTeachers
from oracle_kd.io import InputError
from oracle_kd.store import teacher_outputs
from oracle_kd.tasks import get_task
from oracle_kd.training import TrainConfig, fit, lr_factor

from .conftest import TINY
from .test_training import tiny_data

# 40 examples in batches of 4: 10 steps an epoch, 20 in all, a step row every LOG_EVERY_N_STEPS (10)
CFG = TrainConfig(max_epochs=2, batch_size=4, warmup_steps=3, patience=5, lr=2e-3)


def rows(run_dir, version=0):
    with open(run_dir / "logs" / f"version_{version}" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def by_epoch(table, column):
    """{epoch (from 1): value} of the rows that hold `column`."""
    return {int(r["epoch"]) + 1: float(r[column]) for r in table if r.get(column)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A conventional teacher and a student distilled from it, both with the default (CSV) logger."""
    root = tmp_path_factory.mktemp("tracking")
    task, data = get_task("scene-text"), tiny_data(40)
    teacher = fit(task, "conventional", TINY["conventional"], data, data, CFG, root / "teacher", progress=False)
    outputs = teacher_outputs(root / "store", teacher.checkpoint, task, data)
    kd = [KDTerm(method="frame", teacher=teacher.checkpoint, tau=2.0, weight=0.5)]
    student = fit(task, "student", TINY["student"], WithTeachers(data, {teacher.checkpoint: outputs}), data, CFG,
                  root / "student", kd=kd, progress=False)
    return root, teacher, student


def test_a_run_logs_its_epoch_losses_and_validation_metrics_as_its_history_has_them(runs):
    root, teacher, student = runs
    for name, result in (("teacher", teacher), ("student", student)):
        table = rows(root / name)
        history = {h["epoch"]: h for h in result.history}
        assert sorted(history) == [1, 2]
        assert by_epoch(table, "train_loss_epoch") == {e: h["train_loss"] for e, h in history.items()}
        for metric in ("val_word_accuracy", "val_cer"):
            assert by_epoch(table, metric) == {e: h[metric] for e, h in history.items()}


def test_a_kd_run_logs_its_kd_term_apart_from_ctc(runs):
    root, _, _ = runs
    table = rows(root / "student")
    total, ctc, kd = (by_epoch(table, f"train_{name}_epoch") for name in ("loss", "ctc_loss", "kd_loss"))
    assert set(total) == set(ctc) == set(kd) == {1, 2}
    for epoch in total:
        assert kd[epoch] > 0  # the weighted frame KD term: a KL divergence, zero only where student = teacher
        assert ctc[epoch] + kd[epoch] == pytest.approx(total[epoch], rel=1e-6)
    assert "train_kd_loss_epoch" not in rows(root / "teacher")[0]  # plain CTC has no KD column


def test_a_run_logs_steps_with_their_learning_rate(runs):
    root, _, _ = runs
    steps = [r for r in rows(root / "student") if r.get("lr")]
    assert [int(r["step"]) for r in steps] == [9, 19]  # every 10 steps of 20
    for r in steps:
        # the rate of the step just taken (steps count from 0): 3 warm-up steps, cosine decay over 20
        # (Lightning logs float32; the neighbouring steps' rates differ by more than 1 %)
        assert float(r["lr"]) == pytest.approx(2e-3 * lr_factor(int(r["step"]), 3, 20), rel=1e-6)
        assert float(r["train_loss_step"]) > 0 and float(r["train_kd_loss_step"]) > 0


def test_a_resumed_run_logs_its_new_epochs_beside_the_old(tmp_path, monkeypatch):
    from oracle_kd.training import RunRecorder

    from .test_training import SessionEnded

    task, data, out = get_task("scene-text"), tiny_data(16), tmp_path / "run"
    cfg = TrainConfig(max_epochs=3, batch_size=8, warmup_steps=1, patience=5)
    record = RunRecorder.on_train_epoch_end

    def end_after_epoch_1(self, trainer, pl_module):
        record(self, trainer, pl_module)
        raise SessionEnded

    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", end_after_epoch_1)
    with pytest.raises(SessionEnded):
        fit(task, "student", TINY["student"], data, data, cfg, out, progress=False)
    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", record)
    result = fit(task, "student", TINY["student"], data, data, cfg, out, progress=False)
    logged = {**by_epoch(rows(out, 0), "val_cer"), **by_epoch(rows(out, 1), "val_cer")}
    assert logged == {h["epoch"]: h["val_cer"] for h in result.history}  # each epoch once, none lost
    assert set(by_epoch(rows(out, 1), "val_cer")) == {2, 3}


def test_tensorboard_logs_the_same_numbers(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    task, data = get_task("scene-text"), tiny_data(16)
    cfg = TrainConfig(max_epochs=2, batch_size=8, warmup_steps=1, patience=5, logger="tensorboard")
    result = fit(task, "student", TINY["student"], data, data, cfg, tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "logs" / "version_0"))
    events.Reload()
    logged = [e.value for e in events.Scalars("train_loss_epoch")]
    assert logged == pytest.approx([h["train_loss"] for h in result.history], rel=1e-6)  # stored as float32
    assert {"lr", "train_loss_step", "val_word_accuracy", "val_cer"} <= set(events.Tags()["scalars"])


@pytest.mark.parametrize("name", ["wandb", "mlflow", "tensorboard"])
def test_a_logger_whose_package_is_missing_is_refused_in_one_line_before_any_work(tmp_path, monkeypatch, capsys,
                                                                                   name):
    real = importlib.util.find_spec
    hidden = set(tracking.PACKAGES[name])
    monkeypatch.setattr(importlib.util, "find_spec", lambda package, *a: None if package in hidden else real(package, *a))
    assert main(["train", "scene-text", "--model", "student", "--out", str(tmp_path / "run"), "--logger", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"oracle-kd: error: --logger {name} needs the {tracking.PACKAGES[name][0]} package: "
                   f"pip install {tracking.PACKAGES[name][0]}"]
    assert not (tmp_path / "run").exists()  # no data read, nothing written


def test_only_the_known_loggers_are_accepted():
    with pytest.raises(InputError, match="unknown logger 'neptune'"):
        tracking.check_logger("neptune")
    tracking.check_logger("csv")  # needs nothing beyond lightning
