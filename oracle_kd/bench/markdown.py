"""BENCHMARKS.md, written from bench.json alone (so any figure can be checked against the file)."""

from __future__ import annotations

GROUPS = ("features", "train_step", "teacher_outputs", "inference", "decoding", "growth")


def benchmarks_markdown(r: dict) -> str:
    env = r["environment"]
    lines = [
        "# Benchmarks",
        "",
        f"Written from `bench.json` by `{r['command']}` ({r['seconds']:.0f} s; {r['repeats']} rounds"
        f"{', --quick' if r['quick'] else ''}). {env['cpu']}, {env['cores']} cores, {env['threads']} threads, "
        f"torch {env['torch']}, onnxruntime {env['onnxruntime']}; load average at start "
        f"{' / '.join(env['load_average_at_start'] or ['?'])}.",
        "",
        "Every case ran round-robin with the others in one process, so all saw the same load; figures are "
        "medians with their interquartile range (IQR, as a share of the median). On a shared machine the "
        "absolute numbers move from run to run; ratios between cases of one run are what to compare.",
        *([f"A case of another engine than the one before it (eager PyTorch, ONNX Runtime) starts after an "
           f"untimed {r['settle_seconds'] * 1000:.0f} ms pause, so that the other engine's spinning threads have "
           "fallen idle."] if r.get("settle_seconds") else []),
        "",
        "## The machine's limits, measured",
        "",
        "| limit | value |",
        "| --- | --- |",
        *[f"| fp32 matmul peak, {t} thread{'s' * (t != '1')} | {v:.1f} GFLOP/s ({peak_sources(r, t)}) |"
          for t, v in r["matmul_peak_gflops_by_threads"].items()],
        f"| memory bandwidth ({r['cases']['machine/copy']['bytes_moved'] / 2**21:.0f} MB copy, read + write) "
        f"| {r['memory_bandwidth_gbs']:.1f} GB/s |",
        "",
        "The peak is the faster of two ways to the same matrix product: BLAS (`torch.mm`) and oneDNN (a 1x1 "
        "convolution), the two libraries the models' kernels come from. Each case's `of peak` is its FLOPs "
        "per second over the peak at its own thread count, both measured in the same rounds; a peak at 2 "
        "threads below the 1-thread one means other work held the second core, and a share above 100 % "
        "that the peak was caught in a busy moment or that a kernel does fewer multiplications than counted.",
        "",
        "## Goals (issue 16)",
        "",
        "| goal | measured | met |",
        "| --- | --- | --- |",
        *goal_rows(r),
        "",
    ]
    for task, data in r["data"].items():
        lines += task_section(r, task, data)
    if "ddp" in r:
        lines += ddp_section(r["ddp"])
    lines += cost_section(r["costs"])
    lines += [
        "## How it is measured",
        "",
        "- A training step is collate (features: speech's log-mel front end and SpecAugment run there), "
        "forward, CTC (plus frame KD from stored float16 teacher log-probs for `student_kd_frame`), backward, "
        "gradient clipping and AdamW, on the training batch of median total length that the length-bucketed "
        "sampler forms from the task's own data.",
        "- FLOPs: `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention; 2 per "
        "multiply-add), plus formulas for the CPU LSTM and attention kernels it does not know; elementwise "
        "work and the optimizer are not counted. ONNX Runtime cases count the eager graph's FLOPs.",
        "- `memory_bound_seconds`: twice the bytes every operation writes, at the measured copy bandwidth: "
        "the time memory traffic alone would take with no cache (a case near or under it is memory-bound).",
        "- Peak memory: the process's VmHWM during one untimed call, reset through /proc/self/clear_refs "
        "before it; it includes what the process already held (all tasks' models and data), so the "
        "growth column is the call's own.",
        "- Data wait: one epoch of the student through `training.fit` (Lightning, the loader as training "
        "configures it); the time between one step's end and the next step's start, over the epoch's time.",
        "",
    ]
    return "\n".join(lines)


def goal_rows(r: dict) -> list[str]:
    c, rows = r["cases"], []
    for task, value in r["data_wait_fraction"].items():
        rows.append(f"| data wait under 5 % of step time ({task}) | {pct(value)} | {yes(value < 0.05)} |")
    for task in r["data"]:
        case = c.get(f"{task}/train_step/conventional")
        if case and case.get("fraction_of_peak") is not None:
            rows.append(f"| conventional teacher step at >= 40 % of peak ({task}) | {pct(case['fraction_of_peak'])} "
                        f"| {yes(case['fraction_of_peak'] >= 0.4)} |")
    st = c.get("scene-text/inference/student_onnxruntime_2t"), c.get("scene-text/inference/student_eager_2t")
    best = max((x["examples_per_second"] for x in st if x), default=None)
    if best:
        rows.append(f"| student inference >= 1,000 word images/s, 2 threads | {best:,.0f}/s | {yes(best >= 1000)} |")
    sp = [c.get(f"speech/inference/student_{e}_1t") for e in ("eager", "onnxruntime")]
    rtf = min((x["real_time_factor"] for x in sp if x), default=None)
    if rtf is not None:
        rows.append(f"| speech real-time factor <= 0.01, 1 thread | {rtf:.4f} | {yes(rtf <= 0.01)} |")
    for task in r["data"]:
        for n in ("1t", "2t"):
            ort = c.get(f"{task}/inference/student_onnxruntime_{n}")
            eager = c.get(f"{task}/inference/student_eager_{n}")
            if ort and eager:
                ratio = eager["median_seconds"] / ort["median_seconds"]
                rows.append(f"| ONNX Runtime at least as fast as eager ({task}, {n}) | {ratio:.2f}x eager's speed "
                            f"| {yes(ratio >= 1)} |")
    return rows


def task_section(r: dict, task: str, data: dict) -> list[str]:
    rows = {name.split("/", 1)[1]: v for name, v in r["cases"].items() if name.startswith(task + "/")}
    lines = [f"## {task}", "", f"Data: {data['description']}.", ""]
    if task in r["data_wait_fraction"]:
        e = r["epochs"][task]
        lines += [f"Data wait in the second training epoch of the student ({e['steps']} steps, {e['loader_workers']} "
                  f"loader workers): **{pct(e['data_wait_fraction'])}** (median wait {ms(e['median_wait_seconds'])}, "
                  f"median step {ms(e['median_step_seconds'])})"
                  + (f"; in the first, {pct(e['first_epoch']['data_wait_fraction'])} (median wait "
                     f"{ms(e['first_epoch']['median_wait_seconds'])})." if "first_epoch" in e else "."), ""]
    lines += ["| case | threads | median | IQR | examples/s | GFLOP/call | GFLOP/s | of peak | memory-bound | "
              "peak RSS (growth) MB | real-time factor |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, v in sorted(rows.items(), key=lambda kv: (GROUPS.index(kv[0].split("/")[0]), kv[0])):
        lines.append(
            f"| {name}{' (ORT)' if v['engine'] == 'onnxruntime' else ''} | {v['threads']} | {ms(v['median_seconds'])} "
            f"| {pct(v['spread']['iqr_over_median'])} | {v['examples_per_second']:,.0f} "
            f"| {num(v.get('flops'), 1e9)} | {num(v.get('gflops'))} | {pct(v.get('fraction_of_peak'))} "
            f"| {ms(v.get('memory_bound_seconds'))} | {mem(v)} | {num(v.get('real_time_factor'), digits=4)} |")
    decoding = {name.split("/", 1)[1]: v for name, v in rows.items() if name.startswith("decoding/")}
    if decoding:
        lines += ["", "Decoding the same sentences to subword ids (sentences/s, mean output tokens): " + "; ".join(
            f"{name} {v['examples_per_second']:,.1f}/s ({v.get('mean_output_tokens', 0):.1f} tokens)"
            for name, v in decoding.items()) + ". Untrained weights: the autoregressive decoder seldom "
            "stops before its length limit, so compare time per output token for a trained one."]
    return lines + [""]


def ddp_section(d: dict) -> list[str]:
    configs = list(d["configs"])
    lines = ["## DDP scaling (gloo, one machine)", "",
             "Student training examples/s; processes x threads per process, each process on its own batch of "
             "the preset's size.", "",
             "| task | " + " | ".join(configs) + " | 2 processes / (2 x 1 process) | 2 processes / 2 threads |",
             "| --- |" + " --- |" * (len(configs) + 2)]
    for task in d["efficiency_2_processes"]:
        cells = " | ".join(f"{d['configs'][c][task]['examples_per_second']:,.1f}" for c in configs)
        lines.append(f"| {task} | {cells} | {d['efficiency_2_processes'][task]:.2f} | "
                     f"{d['processes_over_threads'][task]:.2f} |")
    return lines + [""]


def cost_section(c: dict) -> list[str]:
    gpu = c["gpu_assumed"]
    lines = ["## What runs cost", "", f"{c['note']}. GPU column: an **estimate**, FLOPs / ({gpu['peak_tflops']} "
             f"TFLOP/s x {gpu['assumed_fraction_of_peak']:.0%}), assuming an {gpu['name']}; 'loader cores' is "
             "the CPU cores the data preparation (collate) would need to keep that GPU busy: above the cores a "
             "GPU host has, the GPU would wait for data.", "",
             "| task | preset | run | runs | examples | PFLOP | hours here | GPU hours (estimate) | loader cores |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in c["presets"]:
        lines.append(f"| {row['task']} | {row['preset']} | {row['run']} | {row['runs']} | {row['examples']:,} | "
                     f"{row['pflop']:.3f} | {row['hours_here']:.2f} | {row['gpu_hours_estimate']:.4f} | "
                     f"{num(row.get('loader_cores_to_feed_gpu'))} |")
    lines += ["", f"Public corpora ({c['corpus_epochs']} epochs; speech scaled by audio length):", "",
              "| corpus | model | examples per epoch | PFLOP | hours here | GPU hours (estimate) | loader cores |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in c["corpora"]:
        lines.append(f"| {row['corpus']} | {row['model']} | {row['examples_per_epoch']:,} | {row['pflop']:.1f} | "
                     f"{row['hours_here']:,.0f} | {row['gpu_hours_estimate']:.1f} | "
                     f"{num(row.get('loader_cores_to_feed_gpu'))} |")
    return lines + [""]


def summary_lines(r: dict) -> list[str]:
    """What the command prints: the limits, and each task's headline figures."""
    out = [f"matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s ({r['environment']['threads']} threads), "
           f"memory bandwidth {r['memory_bandwidth_gbs']:.1f} GB/s"]
    for name, v in r["cases"].items():
        if not name.startswith("machine/"):
            out.append(f"{name}: {ms(v['median_seconds'])} (IQR {pct(v['spread']['iqr_over_median'])}), "
                       f"{num(v.get('gflops'))} GFLOP/s, {pct(v.get('fraction_of_peak'))} of peak")
    out += [f"{task}: data wait {pct(v)} of a training epoch" for task, v in r["data_wait_fraction"].items()]
    return out


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def ms(x) -> str:
    return "-" if x is None else f"{1000 * x:,.1f} ms"


def num(x, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if x is None else f"{x / scale:,.{digits}f}"


def mem(v: dict) -> str:
    return "-" if v.get("peak_rss_mb") is None else f"{v['peak_rss_mb']:,.0f} ({v['rss_growth_mb']:+,.0f})"


if __name__ == "__main__":  # python -m oracle_kd.bench.markdown bench.json: BENCHMARKS.md again, beside it
    import json
    import sys
    from pathlib import Path

    from oracle_kd.io import atomic_write_text

    source = Path(sys.argv[1])
    atomic_write_text(source.with_name("BENCHMARKS.md"), benchmarks_markdown(json.loads(source.read_text())))


def peak_sources(r: dict, threads: str) -> str:
    """Both libraries' speeds at `threads` threads, as the peak's table cell notes them."""
    found = {kind: r["cases"].get(f"machine/{kind}/{threads}t", {}).get("gflops") for kind in ("matmul", "conv1x1")}
    names = {"matmul": "BLAS", "conv1x1": "oneDNN"}
    return ", ".join(f"{names[k]} {v:.1f}" for k, v in found.items() if v) or "-"
