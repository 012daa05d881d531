"""`oracle-kd bench`: every hot path of every task against the machine's measured limits.

The machines are shared and noisy, so all cases (the machine's own matmul and copy
among them) run round-robin in one process, `repeats` times, and each case is
reported as the median with its interquartile range. FLOPs, bytes and peak memory
are taken in separate untimed passes, so that counting never slows a timed call.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from oracle_kd.bench import costs, epoch, machine
from oracle_kd.bench.batches import bench_data
from oracle_kd.bench.cases import Case, scratch_folder, task_cases
from oracle_kd.bench.measure import SETTLE_SECONDS, count, peak_rss_mb, round_robin, summary
from oracle_kd.io import atomic_write_json, atomic_write_text
from oracle_kd.tasks import get_task

FULL = {"repeats": 7, "epoch_batches": 12, "ddp_steps": 6, "ddp_rounds": 2,
        "matmul_size": machine.MATMUL_SIZE, "copy_bytes": machine.COPY_BYTES}
# --quick checks that everything runs (tests, CI): its machine limits are rougher
QUICK = {"repeats": 3, "epoch_batches": 2, "ddp_steps": 2, "ddp_rounds": 1, "matmul_size": 512, "copy_bytes": 64 << 20}


def run_bench(tasks: list[str], preset: str, out: str | Path, cache: Path, threads: int | None = None,
              quick: bool = False, progress: bool = True, command: str | None = None,
              ddp_scaling: bool = True, repeats: int | None = None) -> dict:
    """Measure, write `out` (bench.json) and BENCHMARKS.md beside it, and return the results."""
    settings = {**(QUICK if quick else FULL), **({"repeats": repeats} if repeats else {})}
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    say = (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    started = time.perf_counter()
    result = {"command": command or "oracle-kd " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "preset": preset, "quick": quick, "repeats": settings["repeats"], "settle_seconds": SETTLE_SECONDS,
              "environment": environment(threads), "data": {}, "data_wait_fraction": {}, "epochs": {}}
    with scratch_folder() as workdir:
        cases, loaded = machine_cases(threads, settings["matmul_size"], settings["copy_bytes"]), {}
        for name in tasks:
            task = get_task(name)
            say(f"{name}: data")
            data = bench_data(task, preset, cache, n_train=settings["epoch_batches"] * student_batch(name, preset),
                              progress=progress)
            loaded[name] = (task, data)
            result["data"][name] = {"description": data.description, "bench_train_examples": len(data.train),
                                    "corpus_train_examples": data.corpus_train_examples}
            say(f"{name}: models and ONNX export")
            cases += task_cases(task, data, preset, threads, Path(workdir))
        by_name = {c.name: c for c in cases}

        def set_threads(name):
            torch.set_num_threads(by_name[name].threads)

        say(f"timing {len(cases)} cases round-robin, {settings['repeats']} rounds")
        times = round_robin({c.name: c.fn for c in cases}, settings["repeats"], before=set_threads,
                            engines={c.name: c.engine for c in cases})
        say("counting FLOPs and bytes; peak memory")
        counted, memory = {}, {}
        for c in cases:
            set_threads(c.name)
            if c.counted_as is None and not c.name.startswith("machine/"):
                counted[c.name] = count(c.fn)
            memory[c.name] = peak_rss_mb(c.fn)
        torch.set_num_threads(threads)
        result["cases"] = {c.name: case_result(c, times[c.name], counted, memory[c.name]) for c in cases}
        limits(result, cases)
        for name, (task, data) in loaded.items():
            say(f"{name}: a short training epoch (data wait)")
            result["epochs"][name] = epoch.data_wait(task, data, preset, Path(workdir) / f"{name}-epoch")
            result["data_wait_fraction"][name] = result["epochs"][name]["data_wait_fraction"]
        if ddp_scaling:
            from oracle_kd.bench import ddp  # not at the top: its workers run it as `python -m`, after this package

            say("DDP scaling: 1 process x 1 thread, 1 x 2, 2 x 1 (gloo)")
            result["ddp"] = ddp.scaling(loaded, preset, Path(workdir),
                                        settings["ddp_steps"], settings["ddp_rounds"])
    result["costs"] = costs.cost_tables(result, preset)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(out)
    atomic_write_json(out, result)
    from oracle_kd.bench.markdown import benchmarks_markdown

    atomic_write_text(out.with_name("BENCHMARKS.md"), benchmarks_markdown(result))
    return result


def machine_cases(threads: int, matmul_size: int, copy_bytes: int) -> list[Case]:
    """The fp32 matrix product (BLAS and oneDNN) at every thread count a case uses, and a memory copy."""
    cases = []
    for n in sorted({1, 2, threads}):
        fn, flops = machine.matmul_case(matmul_size)
        cases.append(Case(f"machine/matmul/{n}t", fn, n, 1, notes={"flops": flops, "matrix_size": matmul_size}))
        fn, flops = machine.conv_case()
        cases.append(Case(f"machine/conv1x1/{n}t", fn, n, 1, notes={"flops": flops}))
    fn, nbytes = machine.copy_case(copy_bytes)
    cases.append(Case("machine/copy", fn, threads, 1, notes={"bytes_moved": nbytes}))
    return cases


def case_result(c: Case, seconds: list[float], counted: dict, memory: dict) -> dict:
    stats = summary(seconds)
    row = {**stats, "seconds": [round(t, 6) for t in seconds], "threads": c.threads, "engine": c.engine,
           "examples": c.examples,
           "examples_per_second": c.examples / stats["median_seconds"], **memory}
    work = counted.get(c.counted_as or c.name)
    if work:
        row.update(work, gflops=work["flops"] / stats["median_seconds"] / 1e9,
                   flops_per_example=work["flops"] / c.examples)
    if c.audio_seconds:
        row["audio_seconds"] = c.audio_seconds
        row["real_time_factor"] = stats["median_seconds"] / c.audio_seconds
    if c.mean_source_length is not None:
        row["mean_source_length"] = c.mean_source_length
    return {**row, **c.notes}


PEAK_CASES = ("machine/matmul/", "machine/conv1x1/")


def limits(result: dict, cases: list[Case]) -> None:
    """The measured peaks (top level) and every case's share of them, in place."""
    rows = result["cases"]
    kernels = [c for c in cases if c.name.startswith(PEAK_CASES)]
    for c in kernels:
        rows[c.name]["gflops"] = c.notes["flops"] / rows[c.name]["median_seconds"] / 1e9
    peak = {}
    for c in kernels:  # the faster library at each thread count
        peak[c.threads] = max(peak.get(c.threads, 0.0), rows[c.name]["gflops"])
    copy = rows["machine/copy"]
    bandwidth = copy["bytes_moved"] / copy["median_seconds"] / 1e9
    result["matmul_peak_gflops"] = peak[result["environment"]["threads"]]
    result["matmul_peak_gflops_by_threads"] = {str(k): v for k, v in sorted(peak.items())}
    result["memory_bandwidth_gbs"] = bandwidth
    for c in cases:
        row = rows[c.name]
        if "gflops" in row:
            row["fraction_of_peak"] = row["gflops"] / peak[c.threads]
        else:
            row.setdefault("gflops", None)
            row.setdefault("fraction_of_peak", None)
        if row.get("bytes_written"):
            # each result written once and read once, at the copy's speed: how long the case would
            # take if memory traffic alone bounded it (a lower bound; caches make it shorter)
            row["memory_bound_seconds"] = 2 * row["bytes_written"] / (bandwidth * 1e9)


def student_batch(task_name: str, preset: str) -> int:
    from oracle_kd.config import load_preset

    return int(load_preset(task_name, preset)["train"]["student"].get("batch_size", 64))


def environment(threads: int) -> dict:
    import onnxruntime

    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "threads": threads, "cpu": cpu_name(), "cores": os.cpu_count(),
            "load_average_at_start": load}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
