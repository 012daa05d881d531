"""What every task hands the core: metrics, per-example errors, a tokenizer, frame counts
asked of the models, an export spec, and how inference reads its inputs."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from oracle_kd.checkpoint import save_model
from oracle_kd.cli import main
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import TASKS, get_task
from oracle_kd.tasks.base import ExportSpec, MetricSpec

from .conftest import SPEECH_TINY, TINY


@pytest.fixture(scope="module", params=sorted(TASKS))
def task(request):
    task = get_task(request.param)
    if task.name == "translation":  # its tokenizer is data: train one on a few number words
        from oracle_kd.tasks.translation.numbers import number_splits
        from oracle_kd.tasks.translation.tokenizer import TokenizerConfig, train_tokenizer

        pairs = number_splits({"train": 200, "val": 1, "test": 1}, seed=0)["train"]
        task.tokenizer = train_tokenizer([s for s, _ in pairs], [t for _, t in pairs], TokenizerConfig(vocab_size=60))
    return task


def scene_student(pools):
    return {**TINY["student"], "cnn": {**TINY["student"]["cnn"], "pools": pools}}


# --- metrics ------------------------------------------------------------------------------


def test_metric_spec_has_exactly_the_fields_the_core_reads():
    assert [f.name for f in dataclasses.fields(MetricSpec)] == [
        "primary", "higher_is_better", "tie_break", "tie_break_higher", "blank_score"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_task("scene-text").metrics.primary = "cer"


def test_each_task_names_its_metrics_and_keeps_the_old_aliases():
    scene, speech = get_task("scene-text"), get_task("speech")
    assert scene.metrics == MetricSpec("word_accuracy", True, "cer", False, {"word_accuracy": 0.0, "cer": 1.0})
    assert speech.metrics == MetricSpec("wer", False, "cer", False, {"wer": 1.0, "cer": 1.0})
    for t in (scene, speech):
        assert (t.metric, t.higher_is_better) == (t.metrics.primary, t.metrics.higher_is_better)


def test_no_references_score_as_blank_output(task):
    assert task.score([], []) == task.metrics.blank_score


def test_scene_text_example_errors_count_wrong_words_after_normalisation():
    scene = get_task("scene-text")
    hyps = ["Hello", "w0rld", "abc", ""]
    refs = ["hello!", "world", "ABC", "x"]  # right (case, punctuation), wrong, right (case), wrong
    errors, units = scene.example_errors(hyps, refs)
    assert errors.tolist() == [0.0, 1.0, 0.0, 1.0] and units.tolist() == [1.0] * 4
    assert errors.sum() / units.sum() == pytest.approx(0.5)
    assert scene.score(hyps, refs)["word_accuracy"] == pytest.approx(1 - 0.5)


def test_speech_example_errors_are_word_edits_over_reference_words():
    speech = get_task("speech")
    hyps = ["a x c d", "", "the cat", " on  the mat "]
    refs = ["a b c", "d e", "the cat", "on a mat"]
    # b->x and +d: 2 edits of 3; both words deleted: 2 of 2; 0 of 2; a->the: 1 of 3 -> 5 / 10
    errors, units = speech.example_errors(hyps, refs)
    assert errors.tolist() == [2.0, 2.0, 0.0, 1.0] and units.tolist() == [3.0, 2.0, 2.0, 3.0]
    assert errors.sum() / units.sum() == pytest.approx(0.5)
    assert speech.score(hyps, refs)["wer"] == pytest.approx(0.5)


# --- tokenizer ----------------------------------------------------------------------------


def test_tokenizer_labels_are_the_strings_of_ids_one_onwards(task):
    tok = task.tokenizer
    assert task.vocab is tok and len(tok.labels) == tok.num_classes - 1
    ids = list(range(2, 7))  # subword labels 2-6 of translation are its placeholders <1>..<5>, whole pieces
    text = tok.decode(ids)
    assert text == "".join(tok.labels[1:6])
    assert [i for i in tok.encode(text) if tok.labels[i - 1] != "\u2581"] == ids  # but a word-start piece
    assert tok.decode([0, *ids, 0]) == text


def test_beam_search_reads_the_labels_list():
    from oracle_kd.decoding import BeamSearch

    tok = get_task("speech").tokenizer
    ids = tok.encode("hi")
    log_probs = torch.full((1, 5, tok.num_classes), -20.0)
    for t, k in enumerate([ids[0], 0, ids[1], 0, 0]):
        log_probs[0, t, k] = 0.0
    assert BeamSearch(tok.labels, beam_width=4)(log_probs, torch.tensor([5])) == ["hi"]


# --- frame counts -------------------------------------------------------------------------


@pytest.mark.parametrize("pools, frames", [
    (["2x2", "2x2", "2x1", "2x1", "2x1"], 32),  # height pooled to 1, width by 4
    (["2x2", "2x2", "2x2", "2x1", "1x1"], 16),
    (["2x1", "2x1", "2x1", "2x1", "1x1"], 128),
])
def test_scene_text_models_report_the_frames_their_forward_emits(pools, frames):
    scene = get_task("scene-text")
    batch = scene.collate([{**e, "text": "ab"} for e in scene.example_inputs(2)])
    student = scene_student(pools)
    oracle = {**TINY["oracle"], "encoder": {**TINY["oracle"]["encoder"], "pools": pools}}
    for kind, cfg in (("student", student), ("conventional", student), ("oracle", oracle)):
        model = scene.build_model(kind, cfg).eval()
        log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
        assert log_probs.shape[1] == model.frame_count(128) == scene.frame_count(128, cfg) == frames, kind
        assert frame_lengths.tolist() == [frames, frames]


@pytest.mark.parametrize("stride", [2, 3])
def test_speech_models_report_the_frames_their_forward_emits(stride):
    speech = get_task("speech")
    samples = [160, 7999, 16000]
    batch = speech.collate([{"audio": np.full(n, 0.1, np.float32), "text": "a"} for n in samples])
    student = {**SPEECH_TINY, "stride": stride}
    oracle = {"encoder": {"channels": 8, "kernels": [5], "stride": stride}, "d_model": 16, "heads": 2, "layers": 1}
    for kind, cfg in (("student", student), ("oracle", oracle)):
        model = speech.build_model(kind, cfg).eval()
        log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
        expected = [speech.frame_count(n, cfg) for n in samples]
        assert frame_lengths.tolist() == expected == [model.frame_count(int(n)) for n in batch.source_lengths]
        assert log_probs.shape[1] == max(expected)
    assert speech.frame_count(16000, {**SPEECH_TINY, "stride": 2}) == 51  # 101 feature frames, 20 ms each


def write_generated_split(folder, spans_px, texts):
    folder.mkdir()
    n = len(texts)
    np.save(folder / "test_images.npy", np.zeros((n, 32, 128), np.uint8))
    np.save(folder / "test_spans.npy", np.asarray(spans_px, np.float32))
    (folder / "test_texts.json").write_text(json.dumps(texts))


def test_scene_text_label_spans_are_in_the_frames_of_the_given_model(tmp_path):
    scene = get_task("scene-text")
    write_generated_split(tmp_path / "gen", [[[8, 24], [24, 40], [-1, -1]]], ["ab"])
    for pools, stride in ((["2x2", "2x2", "2x1", "2x1", "1x1"], 4), (["2x2", "2x2", "2x2", "2x1", "1x1"], 8)):
        data = scene.dataset(tmp_path / "gen", "test", SkipLog(quiet=True), model_cfg=scene_student(pools))
        batch = scene.collate([data[0]])
        assert batch.spans[0].tolist() == [[8 / stride, 24 / stride], [24 / stride, 40 / stride]]
    default = scene.dataset(tmp_path / "gen", "test", SkipLog(quiet=True))  # the quick preset's student: stride 4
    assert default[0]["label_spans"].tolist() == [[2.0, 6.0], [6.0, 10.0]]


def test_user_labels_are_checked_against_the_given_models_frames(tmp_path):
    scene = get_task("scene-text")
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("short.png", "long.png"):
        Image.fromarray(np.full((32, 90), 180, np.uint8)).save(folder / name)
    (folder / "labels.tsv").write_text("short.png\tabc\nlong.png\t" + "ab" * 10 + "\n")  # 20 labels
    wide, narrow = scene_student(["2x2", "2x2", "2x1", "2x1", "1x1"]), scene_student(["2x2", "2x2", "2x2", "2x1", "1x1"])
    assert len(scene.dataset(folder, None, SkipLog(quiet=True), model_cfg=wide)) == 2  # 32 frames
    skips = SkipLog(quiet=True)
    narrow = scene.dataset(folder, None, skips, model_cfg=narrow)
    assert len(narrow) == 1 and len(skips) == 1  # 16 frames: the 20-label word cannot be read


def test_collate_leaves_teacher_outputs_to_the_core():
    scene = get_task("scene-text")
    examples = [{**e, "text": "ab", "teacher_log_probs": torch.zeros(32, 37)} for e in scene.example_inputs(2)]
    assert scene.collate(examples).teacher_log_probs is None


# --- export and inference -----------------------------------------------------------------


def test_export_specs_name_the_axes_of_each_modality():
    scene, speech = get_task("scene-text").export_spec(), get_task("speech").export_spec()
    assert isinstance(scene, ExportSpec) and isinstance(speech, ExportSpec)
    assert scene.dynamic_axes["sources"] == {0: "batch", 3: "width"}  # (batch, 1, height, width)
    assert speech.dynamic_axes["sources"] == {0: "batch", 1: "samples"}  # (batch, samples)
    for spec in (scene, speech):
        assert spec.input_dtypes == ("float32", "int64") and set(spec.dynamic_axes) == set(spec.input_names)


@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter's deprecation notices
def test_an_exported_scene_text_student_reads_images_of_another_width(tiny_checkpoint, tmp_path):
    import onnxruntime

    from oracle_kd.checkpoint import load_model

    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "s.onnx")]) == 0
    task, model, _ = load_model(tiny_checkpoint)
    session = onnxruntime.InferenceSession(str(tmp_path / "s.onnx"))
    for width in (128, 96):
        images = torch.rand(3, 1, 32, width) * 2 - 1
        widths = torch.full((3,), width)
        with torch.no_grad():
            expected, frames = model(images, widths)
        got, got_frames = session.run(None, {"sources": images.numpy(), "source_lengths": widths.numpy()})
        assert got.shape[1] == width // 4 and got_frames.tolist() == frames.tolist()
        assert np.allclose(got, expected.numpy(), atol=1e-4)


def test_each_task_says_how_inference_reads_its_inputs():
    scene, speech = get_task("scene-text"), get_task("speech")
    assert (scene.input_kind, scene.inference_command) == ("files", "recognize")
    assert (speech.input_kind, speech.inference_command) == ("files", "transcribe")
    assert not hasattr(scene, "duration_seconds")
    assert speech.duration_seconds({"audio": np.zeros(8000, np.float32)}) == 0.5


def test_the_wrong_inference_command_names_the_right_one(tiny_checkpoint, tmp_path, capsys):
    assert main(["transcribe", str(tiny_checkpoint), "a.wav"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "oracle-kd recognize" in err[0]
    speech_ckpt = tmp_path / "speech.safetensors"
    save_model(speech_ckpt, get_task("speech").build_model("student", SPEECH_TINY),
               {"task": "speech", "kind": "student", "config": SPEECH_TINY})
    assert main(["recognize", str(speech_ckpt), "a.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "oracle-kd transcribe" in err[0]


def test_bench_labels_come_from_the_tokenizer(task):
    from oracle_kd.bench import typical_batch

    batch = typical_batch(task, 8)
    assert batch.targets.shape[0] == 8
    assert all(3 <= n <= 8 for n in batch.target_lengths.tolist())  # the ids drawn, not a re-encoding
    assert ((batch.targets > 0) & (batch.targets < task.tokenizer.num_classes)).sum() == batch.target_lengths.sum()
