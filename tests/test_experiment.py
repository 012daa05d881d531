"""The smoke experiment end to end, its resumption, and the commands that use its checkpoints."""

import json

import numpy as np
import onnxruntime
import pytest
import torch

from oracle_kd.checkpoint import load_model
from oracle_kd.cli import main
from oracle_kd.config import PAPER_ARMS as ARMS
from oracle_kd.experiment import run_experiment
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task
from oracle_kd.tasks.scene_text.formats import write_labels_tsv, write_lmdb


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    results = run_experiment("scene-text", "smoke", seeds=2, out=root / "out", cache=root / "cache", progress=False)
    return root, results


@pytest.mark.slow
def test_smoke_results_follow_the_contract(smoke):
    root, results = smoke
    on_disk = json.loads((root / "out" / "results.json").read_text())
    assert on_disk["task"] == "scene-text" and on_disk["seeds"] == [0, 1]
    assert on_disk["metric"] == "word_accuracy" and on_disk["higher_is_better"] is True
    assert set(on_disk["students"]) == set(ARMS)
    for name in ("conventional", "oracle"):
        t = on_disk["teachers"][name]
        assert t["params"] > 0 and t["train_seconds"] > 0 and t["epochs"] >= 1
        assert set(t["test"]) >= {"word_accuracy", "cer"} and 0 <= t["alignment_accuracy"] <= 1
    for name in ("conventional", "oracle"):  # the posteriors the KD arms were taught with, one row per training frame
        post = on_disk["teachers"][name]["posteriors"]
        assert post["frames"] > on_disk["data"]["train"] and 0 <= post["blank_fraction"] <= 1
    copy = on_disk["teachers"]["oracle"]["copy_test"]
    assert copy["pairs"] > 0 and np.isfinite(copy["matched_loss"]) and np.isfinite(copy["mismatched_loss"])
    for arm, s in on_disk["students"].items():
        acc = s["test"]["word_accuracy"]
        assert len(acc["runs"]) == 2 and acc["mean"] == pytest.approx(np.mean(acc["runs"]))
        assert len(s["checkpoints"]) == 2 and (s["kd"] == []) == (arm == "student_ctc")
    assert len({s["params"] for s in on_disk["students"].values()}) == 1  # same student in every arm


@pytest.mark.slow
def test_smoke_report_has_tables_and_plots(smoke):
    root, _ = smoke
    report = (root / "out" / "report.md").read_text()
    for arm in ARMS:
        assert arm in report
    assert (root / "out" / "plots" / "learning_curves.png").stat().st_size > 1000
    assert (root / "out" / "plots" / "spikes.png").stat().st_size > 1000


@pytest.mark.slow
def test_running_again_continues_instead_of_starting_over(smoke):
    root, results = smoke
    out = root / "out"
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("best.safetensors")}
    # one run lost its result (as if stopped mid-way): only it is trained again, from its last checkpoint
    lost = out / "students" / "student_ctc" / "lr0.003" / "seed1" / "result.json"
    lost.unlink()
    again = run_experiment("scene-text", "smoke", seeds=2, out=out, cache=root / "cache", progress=False)
    assert lost.exists()
    unchanged = [p for p, t in finished.items() if p.stat().st_mtime_ns == t]
    assert len(unchanged) >= len(finished) - 1
    assert again["teachers"]["oracle"]["params"] == results["teachers"]["oracle"]["params"]


@pytest.mark.slow
def test_a_run_trained_again_is_evaluated_again(smoke):
    root, _ = smoke
    out = root / "out"
    run = out / "students" / "student_ctc" / "lr0.003" / "seed0"
    evaluation = json.loads((run / "evaluation.json").read_text())
    evaluation["test"]["word_accuracy"] = 7.0  # a stale figure, as if from an earlier training of this run
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    kept = run / ".." / "seed1" / "evaluation.json"
    kept_before = kept.read_text()
    results = run_experiment("scene-text", "smoke", seeds=2, out=out, cache=root / "cache", progress=False)
    assert results["students"]["student_ctc"]["runs"][0]["test"]["word_accuracy"] == 7.0  # same result: kept
    (run / "result.json").write_text((run / "result.json").read_text().replace("{", "{ ", 1))  # "trained again"
    results = run_experiment("scene-text", "smoke", seeds=2, out=out, cache=root / "cache", progress=False)
    assert 0 <= results["students"]["student_ctc"]["runs"][0]["test"]["word_accuracy"] <= 1
    assert kept.read_text() == kept_before  # the other runs are not evaluated again


@pytest.mark.slow
def test_a_changed_setting_is_refused_by_the_run_folder_that_holds_another(smoke, capsys):
    root, _ = smoke
    common = ["--out", str(root / "out"), "--cache", str(root / "cache"), "--no-progress"]
    assert main(["experiment", "--task", "scene-text", "--preset", "smoke", "--set", "models.oracle.target_context=3",
                 *common]) == 2
    err = capsys.readouterr().err
    assert "teachers/oracle holds another run (its model differs)" in err and "Traceback" not in err
    assert main(["experiment", "--task", "scene-text", "--preset", "quick", *common]) == 2
    assert "teachers/conventional holds another run (its model, train, data differ)" in capsys.readouterr().err


@pytest.mark.slow
def test_an_added_arm_reuses_every_run_it_does_not_change_and_tunes_on_validation(smoke):
    root, _ = smoke
    out = root / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("best.safetensors")}
    arm = ("arms.student_combo={kd: [{method: frame, teacher: conventional}, {method: alignment, teacher: oracle}], "
           "grid: [{tau: 1.0}, {tau: 3.0}]}")
    # every arm's grid must have the same size: the others get two points too, so they are trained anew
    more = [arm, "grid.kd=[{tau: 1.0, weight: 1.0}, {tau: 2.0, weight: 1.0}]", "grid.plain=[{lr: 0.003}, {}]"]
    results = run_experiment("scene-text", "smoke", seeds=2, out=out, cache=root / "cache", progress=False,
                             overrides=more)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if "teachers" in p.parts)  # teachers reused
    combo = results["students"]["student_combo"]
    assert [t["method"] for t in combo["kd"]] == ["frame", "alignment"] and combo["teachers"] == ["conventional", "oracle"]
    scores = combo["tuning"]["validation"]
    assert len(scores) == 2 and combo["tuning"]["chosen"] == combo["tuning"]["grid"][int(scores[1] > scores[0])]
    assert combo["runs"][0]["validation"]["word_accuracy"] == max(scores)  # the chosen trial is the seed-0 run
    ctc = results["students"]["student_ctc"]
    assert ctc["tuning"]["grid"] == [{"lr": 0.003}, {}] and len(ctc["runs"]) == 2
    unchanged = out / "students" / "student_ctc" / "lr0.003" / "seed0" / "best.safetensors"
    assert unchanged.stat().st_mtime_ns == before[unchanged]  # the point it had before is the same run
    pairs = results["paired_bootstrap"]["pairs"]
    assert "student_combo - student_ctc" in pairs and "student_combo - student_kd_conventional" in pairs


@pytest.mark.slow
def test_evaluate_reads_both_user_formats(smoke, tmp_path, capsys):
    root, results = smoke
    task = get_task("scene-text")
    test = task.dataset(results["data"]["path"], "test", SkipLog())
    images = [test[i]["image"] for i in range(8)]
    labels = [test[i]["text"] for i in range(8)]
    ckpt = results["students"]["student_kd_oracle"]["checkpoints"][0]
    for folder in (write_labels_tsv(tmp_path / "tsv", images, labels), write_lmdb(tmp_path / "lmdb", images, labels)):
        assert main(["evaluate", ckpt, "--data", str(folder), "--json-out", str(tmp_path / "m.json")]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["n"] == 8 and set(printed) >= {"word_accuracy", "cer", "n"}
        assert json.loads((tmp_path / "m.json").read_text()) == printed


@pytest.mark.slow
def test_recognize_prints_one_line_per_image_and_lists_bad_ones(smoke, tmp_path, monkeypatch, capsys):
    from PIL import Image

    root, results = smoke
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((32, 100), 200, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    ckpt = results["students"]["student_ctc"]["checkpoints"][0]
    assert main(["recognize", ckpt, "a.png", "broken.jpg", "missing.png"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("a.png\t")
    skipped = (tmp_path / "skipped.tsv").read_text().splitlines()
    assert len(skipped) == 3 and "broken.jpg" in skipped[1] and "missing.png" in skipped[2]
    assert "broken.jpg" in captured.err and "Traceback" not in captured.err


@pytest.mark.slow
def test_exported_onnx_matches_torch(smoke, tmp_path):
    root, results = smoke
    ckpt = results["students"]["student_ctc"]["checkpoints"][0]
    assert main(["export", ckpt, "--format", "onnx", "--out", str(tmp_path / "s.onnx")]) == 0
    task, model, _ = load_model(ckpt)
    batch = task.collate(task.example_inputs(3))
    with torch.no_grad():
        expected, _ = model(batch.sources, batch.source_lengths)
    session = onnxruntime.InferenceSession(str(tmp_path / "s.onnx"))
    got = session.run(["log_probs"], {"sources": batch.sources.numpy(), "source_lengths": batch.source_lengths.numpy()})[0]
    assert np.allclose(got, expected.numpy(), atol=1e-4)


@pytest.mark.slow
def test_an_oracle_teacher_cannot_be_used_to_recognize(smoke, tmp_path, capsys):
    _, results = smoke
    assert main(["recognize", results["teachers"]["oracle"]["checkpoint"], str(tmp_path / "x.png")]) == 2
    assert "Oracle Teacher" in capsys.readouterr().err


@pytest.mark.slow
def test_a_unit_another_process_holds_is_left_for_later_and_the_rest_goes_on(smoke, tmp_path, monkeypatch):
    import contextlib
    import shutil

    from oracle_kd import experiment
    from oracle_kd.io import claim

    root, _ = smoke
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    held, free = out / "students" / "student_ctc" / "lr0.003" / "seed1", out / "students" / "student_kd_conventional" / "tau1_weight1" / "seed1"
    for run in (held, free):  # two unfinished runs
        for name in ("result.json", "evaluation.json", "best.safetensors", "last.ckpt"):
            (run / name).unlink(missing_ok=True)
    other = contextlib.ExitStack()
    other.enter_context(claim(held / ".lock"))  # as if another process were training it
    waits = []

    def wait(seconds):  # while "the other process" holds its run, the free one must already be done
        waits.append(((free / "result.json").exists(), (held / "result.json").exists()))
        other.close()

    monkeypatch.setattr(experiment.time, "sleep", wait)
    results = run_experiment("scene-text", "smoke", seeds=2, out=out, cache=root / "cache", progress=False)
    assert waits == [(True, False)]  # one wait, with the free run trained and the held one not
    assert (held / "result.json").exists() and len(results["students"]["student_ctc"]["runs"]) == 2


def test_a_claim_is_exclusive_names_its_holder_and_dies_with_it(tmp_path):
    import subprocess
    import sys

    from oracle_kd.io import Busy, claim

    lock = tmp_path / "unit" / ".lock"
    with claim(lock):
        with pytest.raises(Busy, match=r"pid \d+"):
            with claim(lock):
                pass
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom oracle_kd.io import claim\n"
                               f"with claim({str(lock)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Busy, match=f"pid {holder.pid}"):
        with claim(lock):
            pass
    holder.kill()  # killed, it never released the lock itself: the kernel did
    holder.wait()
    with claim(lock):
        pass
