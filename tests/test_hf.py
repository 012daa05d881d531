"""Hugging Face CTC models through the adapter of tasks/speech/hf.py: frames, labels, checkpoints.

Every model here is built from a tiny config or saved to a temporary folder: nothing is downloaded.
"""

import ast
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from oracle_kd.checkpoint import load_model, save_model
from oracle_kd.cli import main
from oracle_kd.config import KDTerm, TrainConfig
from oracle_kd.data import ListDataset
from oracle_kd.distil import distil
from oracle_kd.io import InputError
from oracle_kd.tasks import get_task
from oracle_kd.tasks.speech.formats import write_manifest
from oracle_kd.tasks.speech.hf import label_rows, model_inputs

from .conftest import SPEECH_TINY

ORACLE_TINY = {"encoder": {"channels": 8, "kernels": [5]}, "d_model": 16, "heads": 2, "layers": 1}
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "distil_hf_model.py"
CFG = TrainConfig(max_epochs=1, batch_size=4, warmup_steps=1)


def tiny_config():
    """wav2vec 2.0 at toy size: kernels 10, 4, 4 and strides 5, 8, 8 (320 samples a frame, as the
    task's models), so a field of 10 + 5 * 3 + 5 * 8 * 3 = 145 samples."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'oracle-kd[hf]')")
    return transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, conv_dim=(8, 8, 8), conv_kernel=(10, 4, 4),
                                       conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=2, feat_extract_norm="layer")


def student(seed=0):
    from oracle_kd.tasks.speech.hf import HFCTC

    torch.manual_seed(seed)
    return HFCTC.from_config(tiny_config(), get_task("speech").tokenizer.num_classes)


def waveforms(samples, text="ab c"):
    rng = np.random.default_rng(0)
    examples = [{"audio": (0.1 * rng.standard_normal(n)).astype(np.float32), "text": text} for n in samples]
    return ListDataset(examples, lengths=list(samples))


def test_transformers_is_imported_only_inside_functions_so_oracle_kd_runs_without_it():
    # (lightning imports transformers itself when it is installed, so sys.modules cannot tell)
    for path in (ROOT / "oracle_kd").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level, where an import would make the package need it
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "transformers" for n in names), f"{path}:{node.lineno}"


def test_without_transformers_a_hugging_face_model_says_how_to_get_it(monkeypatch):
    from oracle_kd.tasks.speech.hf import HFCTC

    monkeypatch.setitem(sys.modules, "transformers", None)  # importing it raises ImportError, as if not installed
    with pytest.raises(InputError, match=r'^Hugging Face models need transformers: pip install "oracle-kd\[hf\]"$'):
        HFCTC.from_config(None, 29)


def test_the_blank_and_each_label_find_their_row_in_a_hugging_face_vocabulary():
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "'": 8}
    # blank <- <pad>; a <- A; t <- T; ' <- '; space <- the word delimiter; q: none
    assert label_rows(["a", "t", "'", " ", "q"], vocab, pad_id=0, delimiter="|") == [0, 7, 6, 8, 4, None]


def test_frames_follow_the_conv_stack_and_line_up_with_the_speech_task():
    model = student().eval()
    assert (model.field, model.stride) == (145, 320)
    # 16000 samples: the bare stack gives (16000 - 145) // 320 + 1 = 50 frames; padded by its field,
    # 16000 // 320 + 1 = 51, as the task's models (1 + 16000 // 160 = 101 log-mel frames, halved up)
    assert model.model._get_feat_extract_output_lengths(torch.tensor([16000])).item() == 50
    assert model.frame_count(16000) == 51 == get_task("speech").frame_count(16000, SPEECH_TINY)
    for n in (320, 639, 640, 3000, 8000, 12345):
        assert model.frame_count(n) == n // 320 + 1 == get_task("speech").frame_count(n, SPEECH_TINY)

    task = get_task("speech", sources="waveform")
    batch = task.collate(list(waveforms([16000, 8000, 3000])))
    assert batch.sources.shape == (3, 16000) and batch.source_lengths.tolist() == [16000, 8000, 3000]
    log_probs, frame_lengths = model(batch.sources, batch.source_lengths)
    assert log_probs.shape == (3, 51, 29) and frame_lengths.tolist() == [51, 26, 10]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 51), atol=1e-5)
    alone, _ = model(batch.sources[2:, :3000], batch.source_lengths[2:])  # padding in a batch changes nothing
    assert torch.allclose(alone[0], log_probs[2, :10], atol=1e-4)


def test_log_mel_features_are_refused_naming_the_waveform_task():
    batch = get_task("speech").collate(list(waveforms([16000])))
    with pytest.raises(InputError, match=r'reads? waveforms .*sources="waveform"'):
        student()(batch.sources, batch.source_lengths)


VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "'": 8}  # wav2vec2's order


def pretrained_folder(folder):
    """A tiny Wav2Vec2ForCTC and its tokenizer, as `save_pretrained` writes them (config.json,
    model.safetensors, vocab.json, ...); returns the model."""
    transformers = pytest.importorskip("transformers")
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(folder)
    config = tiny_config()
    config.vocab_size, config.pad_token_id = len(VOCAB), 0
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").exists()
    return model


def test_a_pretrained_folder_loads_offline_its_vocabulary_mapped_onto_the_task_classes(tmp_path):
    from oracle_kd.tasks.speech.hf import HFCTC

    original = pretrained_folder(tmp_path / "model")
    task = get_task("speech", sources="waveform")
    model = HFCTC.from_pretrained(tmp_path / "model", task.tokenizer.labels).eval()
    assert model.new_labels == [c for c in task.tokenizer.labels if c not in "aet' "]
    assert (model.model.config.vocab_size, model.model.config.pad_token_id) == (29, 0)
    batch = task.collate(list(waveforms([8000])))
    log_probs, _ = model(batch.sources, batch.source_lengths)
    with torch.no_grad():
        values, mask, _ = model_inputs(original, batch.sources, batch.source_lengths, model.field)
        logits = original(values, attention_mask=mask).logits
    ids = task.tokenizer.encode("aet' ")
    for ours, theirs in zip(ids, [7, 5, 6, 8, 4]):  # a, e, t, ', space -> A, E, T, ', |
        # the same logit against the blank's: the row moved, the numbers did not
        assert torch.allclose(log_probs[0, :, ours] - log_probs[0, :, 0], logits[0, :, theirs] - logits[0, :, 0],
                              atol=1e-5)


def test_a_folder_without_safetensors_weights_is_refused(tmp_path):
    pytest.importorskip("transformers")
    from oracle_kd.tasks.speech.hf import HFCTC

    with pytest.raises(InputError, match="not a Hugging Face CTC model with safetensors weights"):
        HFCTC.from_pretrained(tmp_path, ["a"])


def test_a_student_distilled_from_a_log_mel_oracle_checkpoint_reloads_and_evaluates(tmp_path, capsys):
    task = get_task("speech", sources="waveform")
    data = waveforms([8000, 9600, 11200, 12800])
    oracle = tmp_path / "oracle.safetensors"  # an untrained Oracle Teacher of the log-mel task: 320 samples a frame
    save_model(oracle, get_task("speech").build_model("oracle", ORACLE_TINY),
               {"task": "speech", "kind": "oracle", "config": ORACLE_TINY})
    model = student()
    result = distil(task, model, data, data, tmp_path / "run", teachers={"oracle": str(oracle)},
                    kd=[KDTerm(method="frame", teacher="oracle")], cfg=CFG, progress=False)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model"]["builder"] == "hf-ctc" and run["model"]["hf_config"]["conv_stride"] == [5, 8, 8]

    loaded_task, loaded, meta = load_model(result.checkpoint)
    assert loaded_task.sources == "waveform" and meta["task_state"] == {"sources": "waveform"}
    model.load_state_dict(load_file(result.checkpoint))
    batch = task.collate([data[0], data[3]])
    assert torch.equal(loaded(batch.sources, batch.source_lengths)[0], model.eval()(batch.sources, batch.source_lengths)[0])

    manifest = write_manifest(tmp_path / "data", [data[i]["audio"] for i in range(2)], ["ab c", "ab c"])
    assert main(["evaluate", result.checkpoint, "--data", str(manifest)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_an_oracle_on_a_copy_of_the_student_encoder_reloads(tmp_path):
    import copy

    from oracle_kd.models.oracle import OracleConfig
    from oracle_kd.tasks.speech.hf import HFOracle

    task = get_task("speech", sources="waveform")
    data = waveforms([8000, 9600, 11200, 12800])
    oracle = HFOracle(copy.deepcopy(student().model.base_model), task.tokenizer.num_classes,
                      OracleConfig(d_model=16, heads=2, layers=1))
    assert oracle.frame_count(16000) == 51  # the student's frames: KD lines up
    result = distil(task, oracle, data, data, tmp_path / "run", cfg=CFG, progress=False)
    _, loaded, _ = load_model(result.checkpoint)
    oracle.load_state_dict(load_file(result.checkpoint))
    batch = task.collate([data[0], data[1]])
    inputs = (batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
    assert type(loaded).__name__ == "HFOracle" and torch.equal(loaded(*inputs)[0], oracle.eval()(*inputs)[0])


@pytest.mark.parametrize("change, says", [
    ({"hidden_size": 10**9}, "hidden_size is larger than 1,048,576"),
    ({"model_type": "wizard"}, "unknown Hugging Face model type 'wizard'"),
    ({"conv_dim": [8, 8, 9000]}, "weights do not match|more weights than"),
])
def test_a_forged_hugging_face_config_is_refused_before_it_is_built(tmp_path, change, says):
    model = student()
    from oracle_kd.distil import describe

    config = describe(model)
    config["hf_config"] = {**config["hf_config"], **change}
    path = tmp_path / "forged.safetensors"
    save_model(path, model, {"task": "speech", "kind": "custom", "config": config,
                             "task_state": {"sources": "waveform"}})
    with pytest.raises(InputError, match=says):
        load_model(path)


def test_a_wav2vec2_checkpoint_teaches_a_log_mel_student_and_exports_to_onnx(tmp_path, capsys, monkeypatch):
    from oracle_kd.distil import describe

    task = get_task("speech")
    data = waveforms([8000, 9600, 11200, 12800])
    teacher = tmp_path / "wav2vec2.safetensors"  # as distil writes it
    save_model(teacher, student(), {"task": "speech", "kind": "custom", "config": describe(student()),
                                    "task_state": {"sources": "waveform"}})
    quartznet = task.build_model("student", SPEECH_TINY)  # log-mel features in, 320 samples a frame
    result = distil(task, quartznet, data, data, tmp_path / "run", teachers={"wav2vec2": str(teacher)},
                    kd=[KDTerm(method="frame", teacher="wav2vec2")], cfg=CFG, progress=False)
    assert result.epochs == 1

    import soundfile

    monkeypatch.chdir(tmp_path)
    soundfile.write("a.wav", data[3]["audio"], 16000)
    assert main(["export", str(teacher), "--out", "w.onnx"]) == 0
    capsys.readouterr()
    texts = []
    for model in (str(teacher), "w.onnx"):
        assert main(["transcribe", model, "a.wav"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0].startswith("a.wav\t") and texts[0] == texts[1]


def example_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("distil_hf_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_example_distils_a_wav2vec2_student_from_its_oracle_teacher(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example:distil_hf_model:start -->\n```python\n(.*?)```\n"
                      r"<!-- example:distil_hf_model:end -->", readme, re.S)
    assert block is not None and block.group(1) == EXAMPLE.read_text()
    pytest.importorskip("transformers", reason="transformers is not installed (pip install 'oracle-kd[hf]')")

    student, result = example_module().main(tmp_path, n_train=16, n_val=8, epochs=1)  # eSpeak NG, a few seconds
    assert result.epochs == 1 and set(result.best_val) == {"wer", "cer"}
    assert str(result.best_val) in capsys.readouterr().out
    task, loaded, _ = load_model(result.checkpoint)
    assert type(loaded).__name__ == "HFCTC" and task.sources == "waveform"
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in load_file(result.checkpoint).items())
    _, oracle, meta = load_model(tmp_path / "oracle" / "best.safetensors")
    assert type(oracle).__name__ == "HFOracle" and meta["config"]["oracle"]["d_model"] == 32


def test_the_readme_example_fine_tunes_a_pretrained_folder(tmp_path):
    pretrained_folder(tmp_path / "pretrained")
    student, result = example_module().main(tmp_path / "out", tmp_path / "pretrained", n_train=16, n_val=8, epochs=1)
    assert result.epochs == 1 and student.new_labels[:3] == ["b", "c", "d"]  # a, e, t, ' and space were in its vocabulary
    assert not any(p.requires_grad for p in student.model.wav2vec2.feature_extractor.parameters())
