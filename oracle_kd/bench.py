"""`oracle-kd bench`: speed figures measured side by side in one process.

The machines are shared and noisy, so every case runs round-robin with the
others, `repeats` times, and the report gives medians and ratios between
cases measured in the same run, never absolute targets.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

from oracle_kd.config import load_preset
from oracle_kd.io import atomic_write_json
from oracle_kd.losses import ctc, frame_kd
from oracle_kd.tasks import get_task


def run_bench(task_name: str, preset: str, repeats: int, out: str, batch_size: int = 64) -> dict:
    task = get_task(task_name)
    cfg = load_preset(task_name, preset)["models"]
    torch.manual_seed(0)
    models = {kind: task.build_model(kind, cfg[kind]) for kind in ("student", "conventional", "oracle")}
    batch = typical_batch(task, batch_size)
    with torch.no_grad():
        teacher_log_probs, _ = models["conventional"].eval()(batch.sources, batch.source_lengths)

    def train_step(kind, kd=False, online_teacher=False):
        model = models[kind].train()
        log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
        loss = ctc(log_probs, frame_lengths, batch.targets, batch.target_lengths)
        if kd:
            if online_teacher:
                with torch.no_grad():
                    teacher, _ = models["conventional"].eval()(batch.sources, batch.source_lengths)
            else:
                teacher = teacher_log_probs
            loss = loss + frame_kd(log_probs, teacher, frame_lengths, 2.0)
        loss.backward()
        model.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def infer(kind):
        models[kind].eval()(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)

    cases = {
        "train_step_student_ctc": lambda: train_step("student"),
        "train_step_student_kd_precomputed": lambda: train_step("student", kd=True),
        "train_step_student_kd_online_teacher": lambda: train_step("student", kd=True, online_teacher=True),
        "train_step_conventional_teacher": lambda: train_step("conventional"),
        "train_step_oracle_teacher": lambda: train_step("oracle"),
        "inference_student": lambda: infer("student"),
        "inference_conventional_teacher": lambda: infer("conventional"),
    }
    median = median_seconds(cases, repeats)
    result = {
        "task": task_name, "preset": preset, "batch_size": batch_size, "repeats": repeats,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()},
        "params": {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()},
        "median_seconds": median,
        "student_examples_per_second": batch_size / median["inference_student"],
        "ratios": {
            "oracle_step_over_conventional_step": median["train_step_oracle_teacher"] / median["train_step_conventional_teacher"],
            "kd_precomputed_over_ctc_step": median["train_step_student_kd_precomputed"] / median["train_step_student_ctc"],
            "kd_online_over_precomputed_step": median["train_step_student_kd_online_teacher"] / median["train_step_student_kd_precomputed"],
            "student_over_conventional_inference": median["inference_student"] / median["inference_conventional_teacher"],
        },
    }
    atomic_write_json(out, result)
    return result


def typical_batch(task, batch_size: int):
    """A collated batch of the task's example inputs with labels of typical length
    (the text of 3-8 label ids drawn from the task's tokenizer), the same on every call."""
    examples = task.example_inputs(batch_size)
    rng = torch.Generator().manual_seed(0)
    tokenizer = task.tokenizer
    for e in examples:
        length = int(torch.randint(3, 9, (1,), generator=rng))
        e["text"] = tokenizer.decode(torch.randint(1, tokenizer.num_classes, (length,), generator=rng).tolist())
    return task.collate(examples)


def median_seconds(cases: dict, repeats: int, warmup_rounds: int = 1) -> dict[str, float]:
    """Median wall time of each case, the cases run round-robin so that all of them
    see the same machine load; `warmup_rounds` rounds first, not timed."""
    for _ in range(warmup_rounds):
        for fn in cases.values():
            fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
