"""The benchmarks: FLOP and byte counts against hand-worked numbers, realistic batches, and
the shape of bench.json from a quick run on tiny sizes. No assertion on any time."""

import json

import numpy as np
import pytest
import torch

from oracle_kd.bench.batches import Sample, batch_at_length, training_batches, typical_batch
from oracle_kd.bench.measure import count, peak_rss_mb, round_robin, summary
from oracle_kd.data import ListDataset


def test_linear_flops_forward_and_backward():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    # forward: 2 rows x 3 outputs x 4 inputs multiply-adds, 2 FLOPs each
    assert count(lambda: layer(x))["flops"] == 2 * 2 * 3 * 4
    # backward adds the weight gradient (same size); x needs no gradient
    assert count(lambda: layer(x).sum().backward())["flops"] == 2 * (2 * 2 * 3 * 4)


def test_conv_flops_include_groups():
    conv = torch.nn.Conv1d(4, 6, kernel_size=3)
    x = torch.randn(1, 4, 10)  # 8 output frames
    assert count(lambda: conv(x))["flops"] == 2 * (6 * 8) * (4 * 3)
    depthwise = torch.nn.Conv1d(4, 4, kernel_size=3, groups=4)  # each output sees 1 input channel
    assert count(lambda: depthwise(x))["flops"] == 2 * (4 * 8) * (1 * 3)


def test_grouped_conv_backward_counts_groups():
    # torch's own formula counts a grouped convolution's weight gradient as if it were dense
    # (x channels: 4x here, 64x on the speech teacher's depthwise layers); the gradients of the
    # input and of the weight each cost what the forward does
    depthwise = torch.nn.Conv1d(4, 4, kernel_size=3, groups=4, bias=False)
    x = torch.randn(2, 4, 10, requires_grad=True)  # 8 output frames
    forward = 2 * (2 * 4 * 8) * (1 * 3)
    assert count(lambda: depthwise(x).sum().backward())["flops"] == 3 * forward
    x.requires_grad_(False)  # the weight's gradient only
    assert count(lambda: depthwise(x).sum().backward())["flops"] == 2 * forward
    strided = torch.nn.Conv1d(4, 6, kernel_size=3, stride=2, groups=2, bias=False)  # 4 output frames
    assert count(lambda: strided(x).sum().backward())["flops"] == 2 * 2 * (2 * 6 * 4) * (2 * 3)


def test_lstm_flops_are_counted_on_cpu():
    lstm = torch.nn.LSTM(4, 5, batch_first=True)
    x = torch.randn(2, 3, 4)  # 2 sequences x 3 steps
    # each step: 4 gates x 5 units from 4 inputs and from 5 state values
    forward = 2 * (2 * 3) * (20 * 4 + 20 * 5)
    assert count(lambda: lstm(x))["flops"] == forward
    assert count(lambda: lstm(x)[0].sum().backward())["flops"] == 3 * forward


def test_bytes_written_counts_results_not_views():
    a, b = torch.ones(10), torch.ones(10)
    assert count(lambda: a + b)["bytes_written"] == 10 * 4
    assert count(lambda: a.view(2, 5))["bytes_written"] == 0


def test_summary_gives_median_and_interquartile_range():
    s = summary([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s["median_seconds"] == 3.0
    assert (s["spread"]["q1"], s["spread"]["q3"], s["spread"]["iqr"]) == (2.0, 4.0, 2.0)


def test_round_robin_alternates_cases():
    calls = []
    times = round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup_rounds=1)
    assert calls == ["a", "b"] * 3 and [len(t) for t in times.values()] == [2, 2]


def test_round_robin_pauses_when_the_engine_changes(monkeypatch):
    from oracle_kd.bench import measure

    events = []
    monkeypatch.setattr(measure.time, "sleep", lambda seconds: events.append(seconds))
    cases = {name: (lambda name=name: events.append(name)) for name in "abc"}
    round_robin(cases, repeats=1, warmup_rounds=1, engines={"a": "eager", "b": "onnxruntime", "c": "onnxruntime"})
    pause = measure.SETTLE_SECONDS
    assert events == [pause, "a", pause, "b", "c"] * 2  # c follows b's engine; a (next round) does not


def test_peak_rss_sees_an_allocation():
    out = peak_rss_mb(lambda: np.ones(50_000_000).sum())  # 400 MB, freed at once
    if out["peak_rss_mb"] is None:
        pytest.skip("VmHWM cannot be reset here")
    assert out["rss_growth_mb"] > 300


def test_typical_batch_keeps_subword_label_ids():
    """Decoding random subword ids and encoding the text again gives other ids (pieces merge);
    the batch's targets must be the ids drawn."""
    from oracle_kd.tasks import get_task
    from oracle_kd.tasks.translation.numbers import number_splits
    from oracle_kd.tasks.translation.tokenizer import TokenizerConfig, train_tokenizer

    task = get_task("translation")
    pairs = number_splits({"train": 200, "val": 1, "test": 1}, seed=0)["train"]
    task.tokenizer = train_tokenizer([s for s, _ in pairs], [t for _, t in pairs], TokenizerConfig(vocab_size=60))
    batch = typical_batch(task, 16)
    rows = [batch.targets[i, :n].tolist() for i, n in enumerate(batch.target_lengths.tolist())]
    assert all(3 <= len(ids) <= 8 for ids in rows)
    assert all(0 < i < task.tokenizer.num_classes for ids in rows for i in ids)
    assert any(task.tokenizer.encode(task.tokenizer.decode(ids)) != ids for ids in rows)  # why re-encoding was wrong
    assert batch.texts == [task.tokenizer.decode(ids) for ids in rows]


def test_batches_group_similar_lengths_and_pick_the_median():
    lengths = [10, 50, 20, 40, 30, 60, 70, 80]
    data = ListDataset([{"text": "a", "n": n} for n in lengths], lengths=lengths)
    assert sorted(len(b) for b in training_batches(data, 2)) == [2, 2, 2, 2]
    totals = sorted(sum(lengths[i] for i in b) for b in training_batches(data, 2))
    median = sum(e["n"] for e in batch_at_length(data, 2, quantile=0.5))
    assert median == totals[len(totals) // 2]


def test_sample_reindexes_and_keeps_lengths():
    lengths = list(range(100, 110))
    sample = Sample(ListDataset([{"text": str(n)} for n in lengths], lengths=lengths), 4)
    assert len(sample) == 4 and [sample[i]["index"] for i in range(4)] == [0, 1, 2, 3]
    assert [int(sample[i]["text"]) for i in range(4)] == sample.source_lengths().tolist()


def test_quick_bench_writes_the_documented_fields(tmp_path):
    from oracle_kd.bench import run_bench

    out = tmp_path / "bench.json"
    run_bench(["scene-text"], "smoke", out, cache=tmp_path / "cache", quick=True, progress=False,
              command="oracle-kd bench --task scene-text --preset smoke --quick", ddp_scaling=False, repeats=2)
    r = json.loads(out.read_text())
    assert r["matmul_peak_gflops"] > 0 and r["memory_bandwidth_gbs"] > 0
    assert 0 <= r["data_wait_fraction"]["scene-text"] <= 1
    epochs = r["epochs"]["scene-text"]  # the second epoch's figures, the first's beside them
    assert epochs["data_wait_fraction"] == r["data_wait_fraction"]["scene-text"]
    assert epochs["steps"] == epochs["first_epoch"]["steps"] > 0
    for name, case in r["cases"].items():
        for field in ("median_seconds", "spread", "gflops", "fraction_of_peak", "peak_rss_mb"):
            assert field in case, (name, field)
    groups = {name.split("/")[1] for name in r["cases"] if name.startswith("scene-text/")}
    assert groups == {"features", "train_step", "teacher_outputs", "inference", "growth"}
    step = r["cases"]["scene-text/train_step/conventional"]
    assert step["flops"] > 0 and step["gflops"] > 0 and step["fraction_of_peak"] > 0
    ort = r["cases"]["scene-text/inference/student_onnxruntime_1t"]
    assert ort["flops"] == r["cases"]["scene-text/inference/student_eager_1t"]["flops"]  # the same graph
    assert r["costs"]["presets"] and r["costs"]["corpora"]
    assert "oracle-kd bench --task scene-text --preset smoke --quick" in (tmp_path / "BENCHMARKS.md").read_text()


def test_translation_decoding_cases_time_the_nat_student_against_autoregressive_search(tmp_path):
    from oracle_kd.bench.cases import decoding_cases
    from oracle_kd.tasks import get_task
    from oracle_kd.tasks.translation.numbers import number_splits
    from oracle_kd.tasks.translation.task import PairSplit
    from oracle_kd.tasks.translation.tokenizer import TokenizerConfig, train_tokenizer
    from oracle_kd.skips import SkipLog

    pairs = number_splits({"train": 40, "val": 8, "test": 8}, seed=0)["train"]
    task = get_task("translation")
    task.tokenizer = train_tokenizer([s for s, _ in pairs], [t for _, t in pairs], TokenizerConfig(vocab_size=60))
    examples = [PairSplit(pairs, task.tokenizer, "toy", 3, False, SkipLog())[i] for i in range(4)]
    models = {"student": task.build_model("student", {"d_model": 16, "heads": 2, "source_layers": 1, "layers": 1}),
              "autoregressive": task.build_model("autoregressive", {"d_model": 16, "heads": 2, "encoder_layers": 1,
                                                                   "decoder_layers": 1, "beam": 2})}
    cases = {name: (fn, notes) for name, fn, notes in decoding_cases(task, models, {"beam": 2}, examples)}
    assert list(cases) == ["student_ctc_greedy", "autoregressive_greedy", "autoregressive_beam2"]
    sources = max(len(e["source_ids"]) for e in examples)
    nat = cases["student_ctc_greedy"][0]()
    assert len(nat) == 4 and all(len(ids) <= 3 * sources for ids in nat)  # CTC: at most one label a frame
    for name in ("autoregressive_greedy", "autoregressive_beam2"):
        outputs = cases[name][0]()
        assert len(outputs) == 4
        assert cases[name][1]["mean_output_tokens"] == pytest.approx(sum(map(len, outputs)) / 4)


def test_the_peak_is_the_faster_library_at_each_thread_count():
    from oracle_kd.bench.run import Case, limits

    cases = [Case("machine/matmul/1t", None, 1, 1, notes={"flops": 4e9}),
             Case("machine/conv1x1/1t", None, 1, 1, notes={"flops": 4e9}),
             Case("machine/copy", None, 1, 1, notes={"bytes_moved": 2e9}),
             Case("task/train_step/x", None, 1, 8)]
    result = {"environment": {"threads": 1}, "cases": {
        "machine/matmul/1t": {"median_seconds": 0.1}, "machine/conv1x1/1t": {"median_seconds": 0.05},
        "machine/copy": {"median_seconds": 0.5, "bytes_moved": 2e9}, "task/train_step/x": {"median_seconds": 1.0, "gflops": 60.0}}}
    limits(result, cases)
    assert result["cases"]["machine/matmul/1t"]["gflops"] == pytest.approx(40.0)  # 4 GFLOP in 0.1 s
    assert result["matmul_peak_gflops"] == pytest.approx(80.0)  # oneDNN's 4 GFLOP in 0.05 s
    assert result["cases"]["task/train_step/x"]["fraction_of_peak"] == pytest.approx(0.75)
    assert result["memory_bandwidth_gbs"] == pytest.approx(4.0)
