"""Bad input: a one-line message naming the file and line, counted, listed, never a traceback."""

import json

import numpy as np
import pytest
from PIL import Image

from oracle_kd.cli import main
from oracle_kd.data import WithTeachers
from oracle_kd.tasks import get_task
from oracle_kd.data import ListDataset
from oracle_kd.config import KDTerm, TrainConfig
from oracle_kd.training import NonFiniteLoss, fit

from .conftest import TINY


def write_messy_folder(folder):
    folder.mkdir()
    for name in ("good1.png", "good2.png", "long.png", "repeats.png", "odd.png"):
        Image.fromarray(np.full((32, 90), 180, np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    lines = [
        "good1.png\tHello",  # 1
        "no tab on this line",  # 2
        "missing.png\tword",  # 3
        "broken.png\tword",  # 4
        "odd.png\tcafé",  # 5: outside the label set
        "long.png\t" + "ab" * 20,  # 6: 40 characters > 32 frames
        "repeats.png\t" + "a" * 20,  # 7: 20 characters need 39 CTC frames
        "good2.png\tW0RLD!",  # 8
        "good1.png\t!!!",  # 9: nothing left after normalisation
    ]
    (folder / "labels.tsv").write_text("\n".join(lines) + "\n")


def test_evaluate_skips_each_bad_line_and_names_it(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    write_messy_folder(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(tiny_checkpoint), "--data", str(tmp_path / "data")]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["n"] == 2 and metrics["skipped"] == 7
    rows = (tmp_path / "skipped.tsv").read_text().splitlines()[1:]
    assert sorted(int(r.split("\t")[0].rsplit(":", 1)[1]) for r in rows) == [2, 3, 4, 5, 6, 7, 9]
    assert all("labels.tsv:" in r for r in rows)
    assert "needs 39 CTC frames" in captured.err
    assert "Traceback" not in captured.err


def test_missing_data_path_is_one_line_error(tiny_checkpoint, tmp_path, capsys):
    assert main(["evaluate", str(tiny_checkpoint), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    assert main(["recognize", str(tmp_path / "none.safetensors"), "a.png"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_a_non_finite_loss_stops_training_and_names_the_step(tmp_path):
    task = get_task("scene-text")
    examples = [{"image": np.full((32, 128), i * 10, np.uint8), "text": "abc"} for i in range(8)]
    data = ListDataset(examples)

    class Poisoned:  # a store entry whose log-probs are NaN: (log_probs, frames) per example
        meta = {"teacher_digest": "poisoned"}

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return np.full((32, task.vocab.num_classes), np.nan, dtype=np.float32), 32

    with pytest.raises(NonFiniteLoss, match=r"epoch 0, step 0"):
        fit(task, "student", TINY["student"], WithTeachers(data, {"t": Poisoned()}), data,
            TrainConfig(max_epochs=1, batch_size=4), tmp_path / "run", kd=[KDTerm(teacher="t")], progress=False)


def test_every_example_ctc_infeasible_is_one_clear_error(tmp_path):
    from oracle_kd.io import InputError
    from oracle_kd.skips import SkipLog

    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((32, 90), 180, np.uint8)).save(folder / name)
    (folder / "labels.tsv").write_text("a.png\t" + "a" * 20 + "\nb.png\t" + "b" * 20 + "\n")
    skips = SkipLog(quiet=True)
    with pytest.raises(InputError, match=r"no usable examples in .*data: all 2 examples were skipped"):
        get_task("scene-text").dataset(folder, None, skips)
    assert len(skips) == 2
