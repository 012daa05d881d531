"""DDP scaling on one machine: the student's training throughput with 1 process x 1 thread,
1 process x 2 threads and 2 processes x 1 thread (gloo, as `--devices 2` on CPU).

Each configuration runs in fresh processes started like torchrun starts them (one
interpreter per rank, `python -m oracle_kd.bench.ddp PAYLOAD`), not forked from the
benchmark, whose thread pools are already running. Every rank trains on its own batch of
the preset's size (DDP's effective batch is world_size times that, as in training).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIGS = ((1, 1), (1, 2), (2, 1))  # (processes, threads per process)
WORKER_TIMEOUT = 1800  # seconds for one configuration's workers, a bound far above a normal run


def scaling(loaded: dict, preset: str, workdir: Path, steps: int, rounds: int) -> dict:
    """Examples per second of each task's student in each configuration, and DDP's efficiency:
    2 processes' throughput over twice one single-thread process's. `loaded`: task name ->
    (task, its `batches.BenchData`)."""
    from oracle_kd.bench.batches import batch_at_length
    from oracle_kd.bench.run import student_batch

    payload = {"preset": preset, "steps": steps, "tasks": {}}
    for name, (task, d) in loaded.items():
        payload["tasks"][name] = {"examples": batch_at_length(d.train, student_batch(name, preset)),
                                  "task_state": task.state() if hasattr(task, "state") else None}
    path = Path(workdir) / "ddp-payload.pkl"
    path.write_bytes(pickle.dumps(payload))
    runs = {f"{p}x{t}": [] for p, t in CONFIGS}
    for _ in range(rounds):
        for processes, threads in CONFIGS:
            runs[f"{processes}x{threads}"].append(launch(path, processes, threads))
    out = {"configs": {}, "note": "processes x threads per process; per-process batch = the preset's student batch"}
    for config, results in runs.items():
        processes = int(config.split("x")[0])
        out["configs"][config] = {}
        for name in loaded:
            per_step = [s for r in results for s in r[name]["seconds_per_step"]]
            median = statistics.median(per_step)
            out["configs"][config][name] = {
                "median_step_seconds": median, "steps": len(per_step),
                "examples_per_second": processes * results[0][name]["batch_size"] / median}
    speed = {config: {name: v["examples_per_second"] for name, v in rows.items()}
             for config, rows in out["configs"].items()}
    out["efficiency_2_processes"] = {name: speed["2x1"][name] / (2 * speed["1x1"][name]) for name in loaded}
    out["processes_over_threads"] = {name: speed["2x1"][name] / speed["1x2"][name] for name in loaded}
    return out


def launch(payload: Path, processes: int, threads: int) -> dict:
    """Run the workers of one configuration; rank 0's timings."""
    port = free_port()
    result = payload.with_name(f"ddp-{processes}x{threads}.json")
    procs = []
    for rank in range(processes):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": str(processes), "OMP_NUM_THREADS": str(threads)}
        procs.append(subprocess.Popen([sys.executable, "-m", "oracle_kd.bench.ddp", str(payload), str(result),
                                       str(threads)], env=env))
    try:
        codes = [p.wait(timeout=WORKER_TIMEOUT) for p in procs]
    except subprocess.TimeoutExpired:  # e.g. a rank that never joined the group: end this configuration's workers
        for p in procs:
            p.kill()
        raise RuntimeError(f"DDP benchmark workers ({processes} x {threads}) did not finish in {WORKER_TIMEOUT} s")
    if any(codes):
        raise RuntimeError(f"DDP benchmark worker failed ({processes} x {threads}): exit codes {codes}")
    return json.loads(result.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(payload_path: str, result_path: str, threads: int) -> None:
    """One rank: for each task, the student under DDP, one warm-up step, then timed steps."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from oracle_kd.bench.cases import train_step
    from oracle_kd.config import TrainConfig, from_dict, load_preset
    from oracle_kd.tasks import get_task

    torch.set_num_threads(threads)
    payload = pickle.loads(Path(payload_path).read_bytes())
    dist.init_process_group("gloo")
    out = {}
    for name, spec in payload["tasks"].items():
        task = get_task(name)
        if spec["task_state"] is not None:
            task.restore(spec["task_state"])
        cfg = load_preset(name, payload["preset"])
        train = from_dict(TrainConfig, cfg["train"]["student"])
        torch.manual_seed(0)
        model = DistributedDataParallel(task.build_model("student", cfg["models"]["student"]))
        optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        seconds = []
        for i in range(payload["steps"] + 1):
            dist.barrier()
            start = time.perf_counter()
            train_step(task, model, optimizer, spec["examples"], train.grad_clip)
            dist.barrier()  # a step lasts until the slowest rank is done
            if i:  # the first step (allocations, DDP's bucket set-up) is not timed
                seconds.append(time.perf_counter() - start)
        out[name] = {"seconds_per_step": seconds, "batch_size": len(spec["examples"])}
    if dist.get_rank() == 0:
        Path(result_path).write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
