"""A student exported to ONNX carries what a deployment needs, and reads inputs exactly as its
checkpoint does: through `recognize` / `transcribe`, and through onnxruntime and numpy alone."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile
import torch
from PIL import Image

from oracle_kd.checkpoint import save_model
from oracle_kd.cli import main
from oracle_kd.export import ONNX_FORMAT
from oracle_kd.tasks import get_task

from .conftest import SPEECH_TINY, TINY

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "run_onnx.py"
CONFIGS = {"scene-text": TINY["student"], "speech": SPEECH_TINY}
# each task's graph input axes, by name: (batch, 1, height, width) images, (batch, samples) waveforms
INPUT_AXES = {"scene-text": ["batch", 1, 32, "width"], "speech": ["batch", "samples"]}

pytestmark = pytest.mark.filterwarnings("ignore")  # the TorchScript exporter's deprecation notices


def exported(tmp_path, task_name):
    """(checkpoint, ONNX file) of an untrained tiny student of `task_name`."""
    torch.manual_seed(0)
    ckpt = tmp_path / f"{task_name}.safetensors"
    model = get_task(task_name).build_model("student", CONFIGS[task_name])
    with torch.no_grad():  # larger weights: an untrained model's texts then differ from input to input
        for p in model.parameters():
            p.mul_(3 if p.dim() > 1 else 1)
    save_model(ckpt, model, {"task": task_name, "kind": "student", "config": CONFIGS[task_name], "seed": 3})
    assert main(["export", str(ckpt), "--out", str(tmp_path / f"{task_name}.onnx")]) == 0
    return ckpt, tmp_path / f"{task_name}.onnx"


def inputs_of(tmp_path, task_name) -> list[str]:
    """Input files of several sizes: stripes in images not at the model's size (one in colour),
    tones with noise of several lengths (one in stereo)."""
    rng = np.random.default_rng(1)
    paths = []
    if task_name == "scene-text":
        for i, (h, w, channels) in enumerate([(32, 100, 1), (45, 160, 3), (32, 128, 1)]):
            stripes = np.sin(2 * np.pi * 3 * (i + 1) * np.linspace(0, 1, w) + i)[None, :, None]  # vertical stripes
            pixels = 127.5 + 100 * stripes + rng.integers(-20, 20, (h, w, channels))
            pixels = pixels.clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(tmp_path / f"w{i}.png")
            paths.append(str(tmp_path / f"w{i}.png"))
    else:
        for i, (seconds, channels) in enumerate([(0.5, 1), (0.83, 2), (1.2, 1)]):
            t = np.arange(int(16000 * seconds)) / 16000
            tone = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)[:, None] + 0.05 * rng.standard_normal((len(t), channels))
            soundfile.write(tmp_path / f"a{i}.wav", tone.squeeze(-1) if channels == 1 else tone, 16000, subtype="PCM_16")
            paths.append(str(tmp_path / f"a{i}.wav"))
    return paths


@pytest.mark.parametrize("task_name", ["scene-text", "speech"])
def test_an_exported_student_carries_its_labels_blank_input_spec_and_model(tmp_path, task_name):
    _, path = exported(tmp_path, task_name)
    task, model = get_task(task_name), onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["oracle_kd_format"] == str(ONNX_FORMAT) == "1" and meta["task"] == task_name
    labels = json.loads(meta["labels"])
    assert len(labels) == task.tokenizer.num_classes and meta["blank"] == "0"
    assert labels[0] == "" and labels[1:] == task.tokenizer.labels  # class k is labels[k]
    assert json.loads(meta["input"]) == task.export_spec().preprocessing
    assert json.loads(meta["model"])["kind"] == "student" and json.loads(meta["model"])["config"] == CONFIGS[task_name]
    assert json.loads(meta["model"])["params"] == sum(p.numel() for p in task.build_model("student", CONFIGS[task_name]).parameters())
    assert json.loads(meta["training"])["seed"] == 3 and len(json.loads(meta["training"])["checkpoint_sha1"]) == 40
    assert model.producer_name == "oracle-kd"


def test_the_input_specs_say_what_each_modality_needs():
    scene = get_task("scene-text").export_spec().preprocessing
    assert (scene["height"], scene["width"], scene["channels"]) == (32, 128, 1)
    assert scene["normalize"] == {"divide": 127.5, "subtract": 1.0}  # 0 -> -1, 255 -> 1
    speech = get_task("speech").export_spec().preprocessing
    assert speech["sample_rate"] == 16000 and speech["front_end"]["in_graph"] is True
    assert (speech["front_end"]["hop_length"], speech["front_end"]["n_mels"]) == (160, 80)


@pytest.mark.parametrize("task_name", ["scene-text", "speech"])
def test_graph_axes_are_named_for_what_they_are(tmp_path, task_name):
    _, path = exported(tmp_path, task_name)
    graph = onnx.load(str(path)).graph

    def axes(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    found = {v.name: axes(v) for v in [*graph.input, *graph.output]}
    num_classes = get_task(task_name).tokenizer.num_classes
    assert found == {"sources": INPUT_AXES[task_name], "source_lengths": ["batch"],
                     "log_probs": ["batch", "frames", num_classes], "frame_lengths": ["batch"]}


@pytest.mark.parametrize("task_name", ["scene-text", "speech"])
def test_inference_reads_the_onnx_file_and_prints_what_the_checkpoint_does(tmp_path, monkeypatch, capsys, task_name):
    ckpt, path = exported(tmp_path, task_name)
    files = inputs_of(tmp_path, task_name)
    monkeypatch.chdir(tmp_path)
    command = get_task(task_name).inference_command
    capsys.readouterr()  # what export printed
    outputs = []
    for model in (ckpt, path):
        assert main([command, str(model), *files]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(files)
    assert [line.split("\t")[0] for line in outputs[0]] == files
    assert len({line.split("\t")[1] for line in outputs[0]}) == len(files)  # a text of its own for each input


@pytest.mark.parametrize("task_name", ["scene-text", "speech"])
def test_onnx_log_probs_agree_with_the_checkpoints(tmp_path, task_name):
    from oracle_kd.inference import forward, load_for_inference
    from oracle_kd.skips import SkipLog

    ckpt, path = exported(tmp_path, task_name)
    task, model, _ = load_for_inference(ckpt)
    _, graph, meta = load_for_inference(path)
    examples = task.load_inputs(inputs_of(tmp_path, task_name), SkipLog())
    with torch.no_grad():
        expected, expected_frames = forward(task, model, examples)
    got, frames = forward(task, graph, examples)
    assert frames.tolist() == expected_frames.tolist() and got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4)
    assert meta["task"] == task_name


def test_an_onnx_file_without_oracle_kd_metadata_is_refused_in_one_line(tmp_path, capsys):
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(tmp_path / "other.onnx"), dynamo=False)
    assert main(["recognize", str(tmp_path / "other.onnx"), "a.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without oracle-kd metadata" in err[0] and "oracle-kd export" in err[0]


def test_an_onnx_file_of_another_format_version_is_refused(tmp_path, capsys):
    _, path = exported(tmp_path, "scene-text")
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "oracle_kd_format": "99"})
    onnx.save(model, str(path))
    assert main(["recognize", str(path), "a.png"]) == 2
    assert "format 99" in capsys.readouterr().err


def test_the_readme_shows_the_example_that_is_tested():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example:run_onnx:start -->\n```python\n(.*?)```\n<!-- example:run_onnx:end -->", readme, re.S)
    assert block is not None and block.group(1) == EXAMPLE.read_text()


@pytest.mark.parametrize("task_name", ["scene-text", "speech"])
def test_the_example_runs_an_exported_student_without_oracle_kd(tmp_path, monkeypatch, capsys, task_name):
    ckpt, path = exported(tmp_path, task_name)
    files = inputs_of(tmp_path, task_name)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()  # what export printed
    assert main([get_task(task_name).inference_command, str(ckpt), *files]) == 0
    expected = capsys.readouterr().out
    # a fresh interpreter in which importing oracle_kd fails, as on a machine without it
    script = ("import runpy, sys; sys.modules['oracle_kd'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", script, str(EXAMPLE), str(path), *files],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == expected


def test_beam_search_reads_the_onnx_file_too(tmp_path, monkeypatch, capsys):
    ckpt, path = exported(tmp_path, "speech")
    files = inputs_of(tmp_path, "speech")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()  # what export printed
    outputs = []
    for model in (ckpt, path):
        assert main(["transcribe", str(model), *files, "--beam", "4"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == len(files)
