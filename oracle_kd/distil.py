"""Distil your own CTC model: any student `nn.Module`, from any teachers of its frame rate.

A model here (student or teacher) is a module whose

    forward(sources, source_lengths, targets=None, target_lengths=None) -> (log_probs, frame_lengths)

takes a task's collated sources (scene text: images (batch, 1, 32, width) in [-1, 1];
speech: log-mel features (batch, frames, 80), or 16 kHz samples (batch, samples) from
`get_task("speech", sources="waveform")`, which Hugging Face models read (tasks/speech/hf.py))
and returns log-softmax CTC posteriors
(batch, frames, classes) over the task's classes (`task.tokenizer.num_classes`, the
blank at 0) with each row's valid frame count. Targets are given to models that read
them (an Oracle Teacher); others ignore them. A teacher is such a module or an
oracle-kd checkpoint; teacher and student must emit the same number of frames for
every input (the same frame rate), since KD compares them frame by frame.

The run is the same as `oracle-kd train`'s (`training.fit`): early stopping on the
task's metric, resumable from `OUT/last.ckpt`, the student's best weights in
`OUT/best.safetensors` (load them with `safetensors.torch.load_file` into your
module), the history and the logger's files in `OUT`. A module that says how it is
rebuilt (`checkpoint_config()`, as the Hugging Face adapters do) makes that file a
checkpoint like any other: `load_model`, `evaluate`, `transcribe` and `--teacher` read it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from oracle_kd.config import KDTerm, TrainConfig
from oracle_kd.data import WithTeachers
from oracle_kd.io import InputError
from oracle_kd.lazy import SKIPPED
from oracle_kd.store import module_outputs, teacher_outputs
from oracle_kd.training import RunResult, fit


def distil(task, student: torch.nn.Module, train_set: Dataset, val_set: Dataset, out_dir: str | Path,
           teachers: dict | None = None, kd: list[KDTerm] | None = None, cfg: TrainConfig | None = None,
           seed: int = 0, progress: bool = True) -> RunResult:
    """Train `student` on `train_set` with CTC plus the `kd` terms and return where its best
    weights are. `teachers` maps a name to a module or a checkpoint path; `kd` terms name
    them (default: frame KD from each teacher, tau 1, weight 1); no teachers: plain CTC.
    The data sets are a task's (`task.dataset(...)`)."""
    out_dir, cfg, teachers = Path(out_dir), cfg or TrainConfig(), dict(teachers or {})
    kd = [KDTerm(teacher=name) for name in teachers] if kd is None else kd
    unknown = sorted({term.teacher for term in kd} - set(teachers))
    if unknown:
        raise InputError(f"KD terms name {', '.join(unknown)}, which are not among the teachers ({', '.join(teachers)})")
    probe = [e for e in map(train_set.__getitem__, range(min(16, len(train_set)))) if SKIPPED not in e][:2]
    frames = check_model(task, "student", student, probe)
    outputs = {}
    for name, teacher in teachers.items():
        if isinstance(teacher, torch.nn.Module):
            teacher_frames = check_model(task, f"teacher {name}", teacher, probe)
            if teacher_frames != frames:
                raise InputError(f"teacher {name} gives {teacher_frames} frames, the student {frames}: teacher and "
                                 "student must share the frame rate")
            outputs[name] = module_outputs(out_dir / "teacher_outputs", name, teacher.eval(), task, train_set)
        else:  # a checkpoint: the store checks its task; training checks its frames against the student's
            outputs[name] = teacher_outputs(out_dir / "teacher_outputs", teacher, task, train_set)
    train = WithTeachers(train_set, outputs) if outputs else train_set
    return fit(task, "custom", describe(student), train, val_set, cfg, out_dir, kd=kd or None, seed=seed,
               progress=progress, model=student)


def describe(model: torch.nn.Module) -> dict:
    """What a run folder and the checkpoint record of a module they did not build: its class and
    size, and what rebuilds it where the module says (`checkpoint_config()`, e.g. the Hugging Face
    adapters of tasks/speech/hf.py), which lets `load_model` load the checkpoint."""
    cls = type(model)
    rebuilt_from = model.checkpoint_config() if hasattr(model, "checkpoint_config") else {}
    return {"module": f"{cls.__module__}.{cls.__qualname__}", "params": sum(p.numel() for p in model.parameters()),
            **rebuilt_from}


@torch.no_grad()
def check_model(task, role: str, model: torch.nn.Module, examples: list[dict]) -> list[int]:
    """The frame counts `model` gives `examples`, after checking it keeps the contract above;
    InputError naming `role` and what is wrong otherwise."""
    batch = task.collate(examples)
    was_training = model.training
    try:
        out = model.eval()(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
    finally:
        model.train(was_training)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise InputError(f"{role}: forward must return (log_probs, frame_lengths), not {type(out).__name__}")
    log_probs, frame_lengths = out
    classes = task.tokenizer.num_classes
    if log_probs.dim() != 3 or log_probs.shape[0] != len(examples) or log_probs.shape[2] != classes:
        raise InputError(f"{role}: log_probs of shape {tuple(log_probs.shape)}, expected (batch {len(examples)}, "
                         f"frames, classes {classes})")
    if tuple(frame_lengths.shape) != (len(examples),) or int(frame_lengths.max()) > log_probs.shape[1]:
        raise InputError(f"{role}: frame_lengths {frame_lengths.tolist()} for {log_probs.shape[1]} frames")
    total = log_probs.float().exp().sum(-1)
    if not torch.allclose(total, torch.ones_like(total), atol=1e-3):
        raise InputError(f"{role}: log_probs are not log-softmax over the classes (a frame's probabilities sum to "
                         f"{float(total.flatten()[0]):.3f})")
    return frame_lengths.tolist()
