"""Training runs stop, resume, record what they did, and train the same under DDP."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from oracle_kd.data import ListDataset
from oracle_kd.tasks import get_task
from oracle_kd.training import TrainConfig, fit

from .conftest import TINY


def tiny_data(n=16):
    rng = np.random.default_rng(0)
    return ListDataset([{"image": rng.integers(0, 256, (32, 128), dtype=np.uint8), "text": "ab1"} for _ in range(n)])


class SessionEnded(RuntimeError):
    pass


def test_a_stopped_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    from oracle_kd.training import RunRecorder

    task, data = get_task("scene-text"), tiny_data()
    out = tmp_path / "run"
    cfg = TrainConfig(max_epochs=3, batch_size=8, warmup_steps=1, patience=5)
    record = RunRecorder.on_train_epoch_end

    def end_after_epoch_1(self, trainer, pl_module):  # as if the session ended once epoch 1 was saved
        record(self, trainer, pl_module)
        raise SessionEnded

    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", end_after_epoch_1)
    with pytest.raises(SessionEnded):
        fit(task, "student", TINY["student"], data, data, cfg, out, progress=False)
    first = json.loads((out / "history.json").read_text())
    assert len(first) == 1 and not (out / "result.json").exists() and (out / "last.ckpt").exists()
    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", record)
    resumed = fit(task, "student", TINY["student"], data, data, cfg, out, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == first[0]  # epoch 1 was not trained again
    assert resumed.total_seconds >= first[0]["seconds"]  # wall time accumulates across sessions
    cpu = [h["cpu_seconds"] for h in resumed.history]  # so does this process's CPU time
    assert 0 < cpu[0] < cpu[1] < cpu[2] and cpu[2] <= resumed.total_seconds * 64
    assert json.loads((out / "result.json").read_text())["history"] == resumed.history


def test_a_finished_run_is_returned_as_it_is(tmp_path):
    task, data = get_task("scene-text"), tiny_data()
    cfg = TrainConfig(max_epochs=1, batch_size=8, warmup_steps=1)
    first = fit(task, "student", TINY["student"], data, data, cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "best.safetensors").stat().st_mtime_ns
    again = fit(task, "student", TINY["student"], data, data, cfg, tmp_path / "run", progress=False)
    assert again == first
    assert (tmp_path / "run" / "best.safetensors").stat().st_mtime_ns == before
    # a finished run folder, moved, is still finished and points at its own weights
    (tmp_path / "run").rename(tmp_path / "moved")
    moved = fit(task, "student", TINY["student"], data, data, cfg, tmp_path / "moved", progress=False)
    assert moved.checkpoint == str(tmp_path / "moved" / "best.safetensors") and moved.history == first.history


def test_a_folder_holding_another_run_is_refused_by_name(tmp_path):
    from oracle_kd.io import InputError

    task, data = get_task("scene-text"), tiny_data()
    cfg = TrainConfig(max_epochs=1, batch_size=8, warmup_steps=1)
    fit(task, "student", TINY["student"], data, data, cfg, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="holds another run \\(its kind, model differ\\)"):
        fit(task, "conventional", TINY["conventional"], data, data, cfg, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="holds another run \\(its data differs\\)"):
        fit(task, "student", TINY["student"], tiny_data(8), data, cfg, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="holds another run \\(its seed differs\\)"):
        fit(task, "student", TINY["student"], data, data, cfg, tmp_path / "run", seed=1, progress=False)


def test_training_runs_in_bf16_mixed_precision_on_the_cpu(tmp_path):
    from dataclasses import replace

    task, data = get_task("scene-text"), tiny_data()
    cfg = TrainConfig(max_epochs=1, batch_size=8, warmup_steps=1, accelerator="cpu", precision="bf16-mixed")
    res = fit(task, "student", TINY["student"], data, data, cfg, tmp_path / "bf16", progress=False)
    assert res.history[0]["train_loss"] > 0 and np.isfinite(res.history[0]["train_loss"])
    identity = json.loads((tmp_path / "bf16" / "run.json").read_text())
    assert identity["train"]["precision"] == "bf16-mixed" and "accelerator" not in identity["train"]
    # the same run in 32-bit precision is another run, not this one's result
    other = fit(task, "student", TINY["student"], data, data, replace(cfg, precision="32-true"), tmp_path / "fp32",
                progress=False)
    assert other.history[0]["train_loss"] != res.history[0]["train_loss"]


def test_length_buckets_cover_every_example_once_and_cut_padding():
    from oracle_kd.data import LengthBucketSampler

    rng = np.random.default_rng(1)
    lengths = rng.integers(10, 1000, size=1000)
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=3, pool=10)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(1000))
    sampler.set_epoch(1)
    assert list(sampler) != first  # a new order every epoch...
    sampler.set_epoch(0)
    assert list(sampler) == first  # ...that depends only on (seed, epoch): resumes see the same epochs

    def padded(order):
        return sum(16 * max(lengths[order[i : i + 16]]) for i in range(0, len(order), 16))

    shuffled = rng.permutation(1000).tolist()
    assert padded(first) < 0.8 * padded(shuffled)


def test_ddp_shards_keep_length_buckets_and_cover_every_example():
    from oracle_kd.data import LengthBucketSampler
    from oracle_kd.training import loader

    rng = np.random.default_rng(2)
    lengths = rng.integers(10, 1000, size=1001)
    shards = [LengthBucketSampler(lengths, batch_size=16, seed=3, pool=10, rank=r, world_size=3) for r in range(3)]
    for sampler in shards:
        sampler.set_epoch(5)
    streams = [list(s) for s in shards]
    # the same number of full batches on every process: DDP steps stay in lock-step
    assert [len(s) for s in streams] == [len(shards[0])] * 3 and len(streams[0]) % 16 == 0
    assert set().union(*map(set, streams)) == set(range(1001))
    assert sum(map(len, streams)) - 1001 < 3 * 16  # padding: less than a batch per process

    def spread(stream):  # mean of (longest - shortest) within each batch
        return np.mean([np.ptp(lengths[stream[i : i + 16]]) for i in range(0, len(stream) - 15, 16)])

    shuffled = rng.permutation(1001).tolist()
    assert all(spread(s) < 0.3 * spread(shuffled) for s in streams)

    class Sized(list):
        def source_lengths(self):
            return lengths

    val = Sized(range(1001))
    seen = [i for r in range(3) for batch in loader(_ListTask(), val, 32, None, r, 3) for i in batch]
    assert set(seen) == set(range(1001)) and len(seen) == 3 * 334


class _ListTask:  # a task whose examples are their own indices
    @staticmethod
    def collate(examples):
        return list(examples)


@pytest.mark.slow
def test_ddp_training_scores_the_whole_validation_split_once(tmp_path):
    """Two DDP processes on CPU: each decodes half of the validation split (13 images:
    the sampler pads one shard with a repeat); the recorded score is the corpus score
    of the whole split, as one process evaluating the best weights finds it."""
    from oracle_kd.checkpoint import load_model
    from oracle_kd.diagnostics import evaluate
    from oracle_kd.skips import SkipLog
    from oracle_kd.tasks.scene_text.formats import write_labels_tsv

    rng = np.random.default_rng(0)
    # long and short labels alternate, so that the two shards' own CERs differ and
    # their average is not the corpus CER (rank r decodes examples r, r + 2, ...)
    words = ["abcdefgh12", "a", "klmnopq3", "b"]
    for split, n in (("train", 24), ("val", 13)):
        images = [rng.integers(0, 256, (32, 128), dtype=np.uint8) for _ in range(n)]
        write_labels_tsv(tmp_path / split, images, [words[i % len(words)] for i in range(n)])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "oracle_kd", "train", "scene-text", "--model", "student", "--preset", "smoke",
           "--train-data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"),
           "--devices", "2", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"checkpoint"') == 1  # one process prints the result
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    task, model, _ = load_model(tmp_path / "run" / "best.safetensors")
    metrics, _ = evaluate(task, model, task.dataset(tmp_path / "val", None, SkipLog(quiet=True)))
    assert metrics["n"] == 13
    assert history[-1]["val_cer"] == pytest.approx(metrics["cer"], abs=1e-6)
    assert history[-1]["val_word_accuracy"] == pytest.approx(metrics["word_accuracy"], abs=1e-6)
