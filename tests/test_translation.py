"""The translation task: number words, tokenizer, CTC-NAT models, BLEU statistics, checkpoints."""

import numpy as np
import pytest
import sacrebleu
import torch

from oracle_kd.checkpoint import load_model, save_model
from oracle_kd.skips import SkipLog
from oracle_kd.stats import paired_bootstrap
from oracle_kd.tasks.translation.models import build_model
from oracle_kd.tasks.translation.numbers import english, german, number_splits
from oracle_kd.tasks.translation.task import PairSplit, TranslationTask, corpus_bleu, corpus_chrf
from oracle_kd.tasks.translation.tokenizer import SubwordTokenizer, TokenizerConfig, train_tokenizer
from oracle_kd.vocab import ctc_min_frames


@pytest.mark.parametrize("n, en, de", [
    (0, "zero", "null"),
    (1, "one", "eins"),
    (21, "twenty one", "einundzwanzig"),
    (101, "one hundred one", "einhunderteins"),
    (1001, "one thousand one", "eintausendeins"),
    (345678, "three hundred forty five thousand six hundred seventy eight",
     "dreihundertfünfundvierzigtausendsechshundertachtundsiebzig"),
])
def test_number_words(n, en, de):
    assert (english(n), german(n)) == (en, de)


def test_number_splits_are_disjoint_and_seeded():
    splits = number_splits({"train": 50, "val": 10, "test": 10}, seed=3)
    sources = [s for pairs in splits.values() for s, _ in pairs]
    assert len(set(sources)) == 70
    assert splits == number_splits({"train": 50, "val": 10, "test": 10}, seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    pairs = number_splits({"train": 300, "val": 1, "test": 1}, seed=0)["train"]
    return train_tokenizer([s for s, _ in pairs], [t for _, t in pairs], TokenizerConfig(vocab_size=60))


def test_labels_are_pieces_shifted_past_the_blank(tokenizer):
    ids = tokenizer.encode("einundzwanzig")
    assert 0 not in ids and max(ids) < tokenizer.num_classes
    assert tokenizer.decode(ids) == "einundzwanzig"
    assert tokenizer.decode([0, *ids, 0]) == "einundzwanzig"  # blanks are not text
    assert tokenizer.num_classes == len(tokenizer.labels) + 1


def test_placeholders_are_one_label_each(tokenizer):
    ids = tokenizer.encode("<1> und <2>")
    assert [tokenizer.labels[i - 1] for i in ids].count("<1>") == 1
    assert tokenizer.decode(ids) == "<1> und <2>"


def test_a_tokenizer_survives_its_state(tokenizer):
    again = SubwordTokenizer.from_state(tokenizer.state())
    text = "dreihundertfünfundvierzig"
    assert again.encode(text) == tokenizer.encode(text)
    assert again.encode_source("three hundred") == tokenizer.encode_source("three hundred")


def test_shared_vocabulary_uses_one_model():
    tok = train_tokenizer(["one two", "three four"], ["eins zwei", "drei vier"], TokenizerConfig(vocab_size=40, shared=True))
    assert tok.source_model == tok.target_model and set(tok.state()) == {"shared"}


@pytest.mark.parametrize("kind", ["student", "conventional", "oracle"])
def test_every_model_gives_k_frames_per_source_subword(kind):
    cfg = {"d_model": 16, "heads": 2, "source_layers": 1, "layers": 1, "upsample": 3}
    if kind == "oracle":
        cfg = {"encoder": cfg, "d_model": 16, "heads": 2, "layers": 1}
    model = build_model(kind, cfg, source_size=20, num_classes=11).eval()
    sources = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    targets, target_lengths = torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1])
    log_probs, frame_lengths = model(sources, lengths, targets, target_lengths)
    assert log_probs.shape == (2, 12, 11)
    assert frame_lengths.tolist() == [12, 6] and model.frame_count(4) == 12
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 12), atol=1e-5)
    # padding does not leak: the short row alone gives the same frames
    alone, _ = model(sources[1:, :2], lengths[1:], targets[1:], target_lengths[1:])
    assert torch.allclose(alone[0], log_probs[1, :6], atol=1e-5)


def test_infeasible_training_targets_are_skipped_and_counted(tokenizer):
    long_target = "dreihundertfünfundvierzigtausendsechshundertachtundsiebzig"
    k = -(-ctc_min_frames(tokenizer.encode("eins")) // len(tokenizer.encode_source("one")))  # just enough for eins
    assert ctc_min_frames(tokenizer.encode(long_target)) > k * len(tokenizer.encode_source("one"))
    skips = SkipLog()
    split = PairSplit([("one", long_target), ("one", "eins")], tokenizer, "toy:train", upsample=k,
                      drop_infeasible=True, skips=skips)
    assert len(split) == 1 and len(skips) == 1
    assert "CTC frames" in skips.items[0].reason
    kept = PairSplit([("one", long_target)], tokenizer, "toy:test", upsample=1, drop_infeasible=False, skips=SkipLog())
    assert len(kept) == 1  # test examples are never dropped: their BLEU counts


def test_bleu_from_summed_statistics_equals_sacrebleu():
    hyps = ["das Haus ist klein", "der Hund", "ein kleines Boot fährt", "nichts"]
    refs = ["das Haus ist sehr klein", "der Hund bellt", "ein kleines Boot fährt schnell", "gar nichts hier"]
    stats = TranslationTask().example_stats(hyps, refs)
    assert stats.shape == (4, 28)
    assert stats[1, :10].tolist() == [2, 1, 0, 0, 2, 1, 0, 0, 2, 3]  # matches 1-4, totals 1-4, hyp and ref length
    assert float(corpus_bleu(stats.sum(0))) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_chrf_from_summed_statistics_by_hand_and_as_sacrebleu():
    task = TranslationTask()
    # "ab" against "ac": unigrams 2/2/1 matched (P = R = 1/2), bigrams 1/1/0 (P = R = 0), no longer
    # n-grams on either side: P = R = 1/4 averaged over the 2 orders present, F-beta = 1/4
    stats = task.example_stats(["ab", "ab"], ["ac", "ab"])
    assert stats[0, 10:16].tolist() == [2, 2, 1, 1, 1, 0]
    assert float(corpus_chrf(stats[0, 10:])) == pytest.approx(25.0)
    assert float(task.corpus_scores["chrf"](stats[1])) == pytest.approx(100.0)
    hyps = ["das Haus ist klein", "der Hund", "ein kleines Boot fährt", "nichts"]
    refs = ["das Haus ist sehr klein", "der Hund bellt", "ein kleines Boot fährt schnell", "gar nichts hier"]
    sums = task.example_stats(hyps, refs).sum(0)
    assert float(task.corpus_scores["chrf"](sums)) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert float(task.corpus_scores["bleu"](sums)) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_the_bootstrap_scores_bleu_by_its_statistics():
    task = TranslationTask()
    refs = ["a b c d e"] * 6
    good = task.example_stats(["a b c d e"] * 6, refs)
    bad = task.example_stats(["a b c d x"] * 6, refs)
    pair = paired_bootstrap({"good": [good], "bad": [bad]}, True, resamples=50,
                            corpus_score=task.corpus_score)["good - bad"]
    expected = 100 - sacrebleu.corpus_bleu(["a b c d x"] * 6, [refs]).score
    assert pair["difference"] == pytest.approx(expected)
    assert pair["interval_95"] == pytest.approx([expected, expected])  # every example alike: no spread


def test_a_checkpoint_carries_its_tokenizer(tmp_path, tokenizer):
    task = TranslationTask()
    task.tokenizer = tokenizer
    cfg = {"d_model": 16, "heads": 2, "source_layers": 1, "layers": 1}
    model = task.build_model("student", cfg)
    path = save_model(tmp_path / "m.safetensors", model, {"task": "translation", "kind": "student", "config": cfg,
                                                           "task_state": task.state()})
    loaded_task, loaded, _ = load_model(path)
    assert loaded_task.tokenizer.encode("einundzwanzig") == tokenizer.encode("einundzwanzig")
    sources = torch.tensor([tokenizer.encode_source("twenty one")])
    with torch.no_grad():
        assert torch.equal(loaded(sources, torch.tensor([sources.shape[1]]))[0],
                           model.eval()(sources, torch.tensor([sources.shape[1]]))[0])


def test_without_data_the_task_builds_placeholder_models_only_for_checks():
    task = TranslationTask()
    assert task.build_model("student", {"d_model": 16, "heads": 2}) is not None
    with pytest.raises(Exception, match="no tokenizer yet"):
        task.state()
    assert np.isfinite(TranslationTask.corpus_score(np.zeros(10)))


# --- end to end (slow): the smoke experiment, translate, export ------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from oracle_kd.experiment import run_experiment

    root = tmp_path_factory.mktemp("translation-smoke")
    return run_experiment("translation", "smoke", out=root / "out", cache=root / "cache", progress=False)


@pytest.mark.slow
def test_the_smoke_experiment_compares_arms_by_bleu(smoke):
    assert smoke["metric"] == "bleu" and smoke["higher_is_better"]
    assert set(smoke["students"]) >= {"student_ctc", "student_kd_conventional", "student_kd_oracle"}
    pairs = smoke["paired_bootstrap"]["pairs"]
    assert pairs and all(len(p["interval_95"]) == 2 for p in pairs.values())
    assert smoke["data"]["skipped"] >= 0 and smoke["teachers"]["oracle"]["copy_test"]["pairs"] > 0


@pytest.mark.slow
def test_sequence_level_kd_trains_on_the_autoregressive_teachers_outputs(smoke):
    import json
    from pathlib import Path

    seqkd = smoke["students"]["student_seqkd_autoregressive"]
    assert seqkd["targets"] == "autoregressive" and seqkd["kd"] == []
    combined = smoke["students"]["student_seqkd_autoregressive_kd_oracle"]
    assert combined["targets"] == "autoregressive" and combined["kd"][0]["teacher"] == "oracle"
    store = Path(smoke["teachers"]["autoregressive"]["checkpoint"]).parents[2] / "teacher_outputs"
    [entry] = [json.loads(p.read_text()) for p in store.glob("*.targets.json")]
    assert len(entry["texts"]) == 95 and entry["kept_reference"] <= 95  # 96 pairs, one CTC-infeasible


@pytest.mark.slow
def test_translate_gives_the_same_lines_from_the_checkpoint_and_its_onnx_export(smoke, tmp_path, monkeypatch, capsys):
    import io

    from oracle_kd.cli import main

    checkpoint = smoke["students"]["student_ctc"]["checkpoints"][0]
    onnx_file = tmp_path / "student.onnx"
    assert main(["export", checkpoint, "--out", str(onnx_file)]) == 0
    capsys.readouterr()
    outputs = []
    for model in (checkpoint, str(onnx_file)):
        monkeypatch.setattr("sys.stdin", io.StringIO("twenty one\n\nthree hundred five\n"))
        assert main(["translate", model, "--skipped", str(tmp_path / "skipped.tsv")]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert outputs[0] == outputs[1]
    assert [line.split("\t")[0] for line in outputs[0]] == ["line 1", "line 3"]  # the empty line 2 is skipped
    assert "line 2\tempty line" in (tmp_path / "skipped.tsv").read_text()


@pytest.mark.slow
def test_translate_runs_the_autoregressive_teachers_own_search(smoke, tmp_path, monkeypatch, capsys):
    import io

    from oracle_kd.checkpoint import load_model
    from oracle_kd.cli import main

    checkpoint = smoke["teachers"]["autoregressive"]["checkpoint"]
    monkeypatch.setattr("sys.stdin", io.StringIO("twenty one\n\nthree hundred five\n"))
    assert main(["translate", checkpoint, "--skipped", str(tmp_path / "skipped.tsv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["line 1", "line 3"]
    task, model, _ = load_model(checkpoint)  # the same search, run by hand
    batch = task.collate(task.load_inputs(["twenty one"], None))
    [ids] = model.generate(batch.sources, batch.source_lengths)
    assert lines[0] == "line 1\t" + task.tokenizer.decode(ids)


@pytest.mark.filterwarnings("ignore")  # the dynamo exporter's notes on shapes
def test_the_onnx_export_gives_the_checkpoints_log_probs_at_any_batch_and_length(tokenizer, tmp_path):
    """The exported graph (opset 23's Attention operator, written by torch's dynamo exporter) is
    traced on one batch; it must give the model's log-probs on others: one example, one token,
    sources of several lengths padded together, and its axes keep the names of the other tasks'."""
    import onnx
    import onnxruntime

    from oracle_kd.cli import main
    from oracle_kd.export import OUTPUT_AXES

    task = TranslationTask()
    task.tokenizer = tokenizer
    cfg = {"d_model": 16, "heads": 2, "source_layers": 1, "layers": 1}
    torch.manual_seed(0)
    model = build_model("student", cfg, tokenizer.source_size, tokenizer.num_classes).eval()
    save_model(tmp_path / "student.safetensors", model,
               {"task": "translation", "kind": "student", "config": cfg, "task_state": task.state()})
    assert main(["export", str(tmp_path / "student.safetensors"), "--out", str(tmp_path / "student.onnx")]) == 0
    graph = onnx.load(str(tmp_path / "student.onnx"))
    assert graph.opset_import[0].version == 23 and "Attention" in {n.op_type for n in graph.graph.node}
    axes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.graph.output}
    assert axes == {"log_probs": ["batch", "frames", tokenizer.num_classes], "frame_lengths": ["batch"]}
    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    for ids in ([[5]], [[5, 9, 12, 3], [7], [8, 8, 2, 11, 6, 4, 10]]):
        lengths = torch.tensor([len(s) for s in ids])
        sources = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
        for row, s in enumerate(ids):
            sources[row, : len(s)] = torch.tensor(s)
        with torch.no_grad():
            expected, expected_frames = model(sources, lengths)
        got, frames = session.run(list(OUTPUT_AXES), {"sources": sources.numpy(), "source_lengths": lengths.numpy()})
        assert frames.tolist() == expected_frames.tolist() == (3 * lengths).tolist()
        for row, n in enumerate(frames):  # valid frames (padding frames attend to the same keys, but say nothing)
            np.testing.assert_allclose(got[row, :n], expected[row, :n].numpy(), atol=1e-5)
