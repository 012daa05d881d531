"""The speech smoke experiment end to end, on the same core as scene text, and its commands."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from oracle_kd.cli import main
from oracle_kd.config import PAPER_ARMS as ARMS
from oracle_kd.experiment import run_experiment
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task
from oracle_kd.tasks.speech.formats import write_manifest

pytestmark = pytest.mark.slow  # every test here reads a speech smoke experiment


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    results = run_experiment("speech", "smoke", seeds=1, out=root / "out", cache=root / "cache", progress=False)
    return root, results


def test_speech_smoke_results_follow_the_contract(smoke):
    root, _ = smoke
    results = json.loads((root / "out" / "results.json").read_text())
    assert results["metric"] == "wer" and results["higher_is_better"] is False
    assert set(results["students"]) == set(ARMS)
    for arm in ARMS:
        assert set(results["students"][arm]["test"]) == {"wer", "cer"}
    copy = results["teachers"]["oracle"]["copy_test"]
    assert copy["pairs"] > 0
    assert 0 <= results["teachers"]["oracle"]["alignment_accuracy"] <= 1
    assert (root / "out" / "report.md").exists() and (root / "out" / "plots" / "spikes.png").exists()


def test_evaluate_and_transcribe_a_manifest(smoke, tmp_path, monkeypatch, capsys):
    root, results = smoke
    task = get_task("speech")
    test = task.dataset(results["data"]["path"], "test", SkipLog())
    audios, texts = [test[i]["audio"] for i in range(3)], [test[i]["text"] for i in range(3)]
    manifest = write_manifest(tmp_path / "data", audios, texts)
    ckpt = results["students"]["student_kd_oracle"]["checkpoints"][0]
    assert main(["evaluate", ckpt, "--data", str(manifest)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 3 and {"wer", "cer"} <= set(printed)

    monkeypatch.chdir(tmp_path)
    soundfile.write(tmp_path / "a.wav", np.asarray(audios[0]), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVE")
    (tmp_path / "folder.wav").mkdir()
    assert main(["transcribe", ckpt, "a.wav", "bad.wav", "folder.wav", "--beam", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("a.wav\t") and len(captured.out.splitlines()) == 1
    assert "real-time factor" in captured.err
    skipped = (tmp_path / "skipped.tsv").read_text()
    assert "bad.wav" in skipped and "folder.wav\ta folder, not an audio file" in skipped


def test_speech_student_exports_with_its_front_end(smoke, tmp_path):
    import onnxruntime
    import torch

    from oracle_kd.checkpoint import load_model

    _, results = smoke
    ckpt = results["students"]["student_ctc"]["checkpoints"][0]
    assert main(["export", ckpt, "--out", str(tmp_path / "s.onnx")]) == 0
    task, model, _ = load_model(ckpt)
    module, (audio, lengths) = task.export_graph(model, task.example_inputs(2))
    with torch.no_grad():
        expected = module(audio, lengths)[0].numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "s.onnx"))
    got = session.run(["log_probs"], {"sources": audio.numpy(), "source_lengths": lengths.numpy()})[0]
    assert np.allclose(got, expected, atol=1e-3)


def test_a_manifest_rejected_whole_still_lists_every_skip(smoke, tmp_path, monkeypatch, capsys):
    _, results = smoke
    lines = [json.dumps({"audio_filepath": f"missing{i}.wav", "duration": 1.0, "text": "hello"}) for i in range(25)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    ckpt = results["students"]["student_ctc"]["checkpoints"][0]
    assert main(["evaluate", ckpt, "--data", "m.jsonl"]) == 2
    assert "no usable utterances" in capsys.readouterr().err
    rows = (tmp_path / "skipped.tsv").read_text().splitlines()[1:]
    assert len(rows) == 25 and all("missing" in r for r in rows)  # beyond the 20 the terminal shows


def test_a_missing_language_model_is_named(smoke, tmp_path, capsys):
    _, results = smoke
    ckpt = results["students"]["student_ctc"]["checkpoints"][0]
    assert main(["transcribe", ckpt, str(tmp_path / "a.wav"), "--beam", "4", "--lm", "nowhere.arpa"]) == 2
    assert "nowhere.arpa: language model file not found" in capsys.readouterr().err


def test_an_unreadable_language_model_is_named(smoke, tmp_path, capsys):
    pytest.importorskip("kenlm")  # the optional [lm] extra; without it --lm says to install it
    _, results = smoke
    (tmp_path / "lm.arpa").write_text("not an arpa file\n")
    ckpt = results["students"]["student_ctc"]["checkpoints"][0]
    assert main(["transcribe", ckpt, str(tmp_path / "a.wav"), "--beam", "4", "--lm", str(tmp_path / "lm.arpa")]) == 2
    assert "lm.arpa: not a readable ARPA or KenLM binary file" in capsys.readouterr().err
