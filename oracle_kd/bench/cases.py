"""The hot paths of one task, each a `Case`: a callable plus what one call processes.

Every case starts from the examples a data loader hands over (raw images, waveforms,
subword ids), so a training step includes the features (speech's log-mel front end runs
in collate), the forward and backward passes and the optimizer step, as in training.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from oracle_kd.bench.batches import batch_at_length
from oracle_kd.checkpoint import save_model
from oracle_kd.config import TrainConfig, from_dict, load_preset
from oracle_kd.diagnostics import inputs
from oracle_kd.losses import ctc, frame_kd

KD_TAU = 1.0  # frame KD's temperature in the KD step: any value costs the same
INFERENCE_THREADS = (1, 2)  # student inference is measured at each of these thread counts
GROWTH_BATCH_FACTORS = (0.25, 2.0)  # the student step at these multiples of the preset's batch size ...
GROWTH_LENGTH_QUANTILES = (0.1, 0.9)  # ... and on batches this far along the sorted batch lengths


@dataclass
class Case:
    name: str  # "<task>/<group>/<what>", e.g. "speech/train_step/student_ctc"
    fn: Callable[[], object]
    threads: int  # torch (and onnxruntime) threads while it runs
    examples: int  # examples one call processes
    audio_seconds: float | None = None  # seconds of audio one call processes (speech)
    mean_source_length: float | None = None  # in the task's source units (samples, subwords); None: fixed size
    engine: str = "eager"  # eager | onnxruntime
    counted_as: str | None = None  # the case whose FLOPs this one shares (an ONNX graph is not counted)
    notes: dict = field(default_factory=dict)


def task_cases(task, data, preset: str, threads: int, workdir: Path, growth: bool = True) -> list[Case]:
    """Every case of `task` on batches of its bench data (`batches.BenchData`)."""
    cfg = load_preset(task.name, preset)
    train_cfg = {kind: from_dict(TrainConfig, t) for kind, t in cfg["train"].items()}
    batch_size = train_cfg["student"].batch_size
    kinds = [k for k in cfg["models"] if k in ("student", "conventional", "oracle", "autoregressive")]
    torch.manual_seed(0)
    models = {kind: task.build_model(kind, cfg["models"][kind]) for kind in kinds}
    optimizers = {kind: torch.optim.AdamW(m.parameters(), lr=train_cfg[kind].lr,
                                          weight_decay=train_cfg[kind].weight_decay) for kind, m in models.items()}
    train_examples = batch_at_length(data.train, batch_size)
    clean_examples = [{**e, "augment": False} for e in train_examples]  # teachers and inference see clean inputs
    teacher = teacher_log_probs(task, models["conventional"], clean_examples)

    def step(kind, examples, kd=None):
        return lambda: train_step(task, models[kind], optimizers[kind], examples, train_cfg[kind].grad_clip, kd)

    def case(group, what, fn, examples, **kw):
        return Case(f"{task.name}/{group}/{what}", fn, kw.pop("threads", threads), len(examples),
                    audio_seconds(task, examples), mean_length(data.train, examples), **kw)

    cases = [case("features", "collate", lambda: task.collate(train_examples), train_examples),
             case("train_step", "student_ctc", step("student", train_examples), train_examples),
             case("train_step", "student_kd_frame", step("student", train_examples, teacher), train_examples)]
    cases += [case("train_step", kind, step(kind, train_examples), train_examples)
              for kind in kinds if kind != "student"]
    if hasattr(task, "features"):  # speech keeps features once computed: the first epoch's collate too
        cases.append(case("features", "collate_first_epoch", lambda: first_collate(task, train_examples),
                          train_examples))
    cases += [case("teacher_outputs", kind, lambda kind=kind: teacher_outputs(task, models[kind], clean_examples),
                   clean_examples) for kind in ("conventional", "oracle")]
    eager_name = None
    for n in INFERENCE_THREADS:
        eager = case("inference", f"student_eager_{n}t", student_inference(task, models["student"], clean_examples),
                     clean_examples, threads=n)
        eager_name = eager_name or eager.name
        cases.append(eager)
    onnx_file = export_student(task, models["student"], cfg["models"]["student"], workdir)
    for n in INFERENCE_THREADS:
        cases.append(case("inference", f"student_onnxruntime_{n}t", onnx_inference(task, onnx_file, clean_examples, n),
                          clean_examples, threads=n, engine="onnxruntime", counted_as=eager_name))
    if "autoregressive" in models:  # translation: one-pass NAT decoding against the AR teacher's (issue 13)
        cases += [case("decoding", what, fn, clean_examples, notes=notes)
                  for what, fn, notes in decoding_cases(task, models, cfg["models"]["autoregressive"], clean_examples)]
    if growth:
        for factor in GROWTH_BATCH_FACTORS:
            examples = batch_at_length(data.train, max(1, int(batch_size * factor)))
            cases.append(case("growth", f"student_batch_{len(examples)}", step("student", examples), examples))
        if getattr(data.train, "source_lengths", lambda: None)() is not None:  # fixed-size inputs: nothing to vary
            for q in GROWTH_LENGTH_QUANTILES:
                examples = batch_at_length(data.train, batch_size, quantile=q)
                cases.append(case("growth", f"student_length_q{round(q * 100):02d}", step("student", examples),
                                  examples))
    return cases


def first_collate(task, examples: list[dict]):
    """`collate` as the first epoch runs it: no utterance's features computed yet."""
    kept = task.features
    task.features = type(kept)(kept.frontend, limit_mb=0)
    try:
        return task.collate(examples)
    finally:
        task.features = kept


def train_step(task, model, optimizer, examples: list[dict], grad_clip: float, teacher=None) -> None:
    """One optimizer step as training takes it: features (collate), forward, loss, backward,
    gradient clipping, AdamW. `teacher`: precomputed float16 log-probs for frame KD."""
    batch = task.collate(examples)
    model.train()
    if hasattr(model, "sequence_loss"):  # the autoregressive teacher brings its own loss
        loss = model.sequence_loss(*inputs(batch))
    else:
        log_probs, frame_lengths = model(*inputs(batch))
        loss = ctc(log_probs, frame_lengths, batch.targets, batch.target_lengths)
        if teacher is not None:
            loss = loss + frame_kd(log_probs, teacher.float()[:, : log_probs.shape[1]], frame_lengths, KD_TAU)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.inference_mode()
def teacher_outputs(task, model, examples: list[dict]) -> np.ndarray:
    """What the teacher output store computes per batch: a clean forward pass (the Oracle reads
    the labels too), kept as float16."""
    batch = task.collate(examples)
    log_probs, _ = model.eval()(*inputs(batch))
    return log_probs.half().numpy()


def teacher_log_probs(task, model, examples: list[dict]) -> torch.Tensor:
    return torch.from_numpy(teacher_outputs(task, model, examples))


def decoding_cases(task, models: dict, ar_cfg: dict, examples: list[dict]) -> list[tuple[str, Callable, dict]]:
    """Sentences to label ids, the whole way: the CTC student's one pass and greedy collapse,
    against the autoregressive teacher's greedy and beam search, on the same sentences. With
    untrained weights the autoregressive decoder rarely ends early, so it runs towards its length
    limit; `notes` say how many tokens each output had (time per token is what carries over)."""
    from oracle_kd.decoding import greedy_decode

    batch = task.collate(examples)
    student, teacher = models["student"].eval(), models["autoregressive"].eval()

    @torch.inference_mode()
    def nat():
        log_probs, frame_lengths = student(batch.sources, batch.source_lengths)[:2]
        return [h.ids for h in greedy_decode(log_probs, frame_lengths)]

    def ar(beam: int):
        return torch.inference_mode()(lambda: teacher.generate(batch.sources, batch.source_lengths, beam=beam))

    def tokens(fn) -> dict:
        outputs = fn()
        return {"mean_output_tokens": float(np.mean([len(o) for o in outputs])) if outputs else 0.0}

    beam = int(ar_cfg.get("beam", 4))
    decoders = {"student_ctc_greedy": nat, "autoregressive_greedy": ar(1), f"autoregressive_beam{beam}": ar(beam)}
    return [(name, fn, tokens(fn)) for name, fn in decoders.items()]


def student_inference(task, model, examples: list[dict]):
    """Deployment's forward pass in eager PyTorch: the exported graph's inputs (raw waveforms for
    speech, whose front end is part of the graph) to log-probs; greedy decoding excluded."""
    module, _ = task.export_graph(model, examples)

    @torch.inference_mode()
    def fn():
        module.eval()(*task.export_inputs(examples))

    return fn


def export_student(task, model, model_cfg: dict, workdir: Path) -> Path:
    """The student as `oracle-kd export` writes it (via a checkpoint, as a user exports one)."""
    from oracle_kd.export import export_onnx

    meta = {"task": task.name, "kind": "student", "config": model_cfg}
    if hasattr(task, "state"):
        meta["task_state"] = task.state()
    checkpoint = save_model(Path(workdir) / f"{task.name}-student.safetensors", model, meta)
    with warnings.catch_warnings():  # the tracer's notes on shapes; `oracle-kd export` shows them
        warnings.simplefilter("ignore")
        return export_onnx(str(checkpoint), str(Path(workdir) / f"{task.name}-student.onnx"))


def onnx_inference(task, onnx_file: Path, examples: list[dict], threads: int):
    """The exported student in ONNX Runtime with `threads` intra-op threads (the session options
    `load_onnx` uses, but for the thread count)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def fn():
        feed = {name: t.numpy() for name, t in zip(names, task.export_inputs(examples))}
        session.run(None, feed)

    return fn


def audio_seconds(task, examples: list[dict]) -> float | None:
    duration = getattr(task, "duration_seconds", None)
    return None if duration is None else float(sum(duration(e) for e in examples))


def mean_length(dataset, examples: list[dict]) -> float | None:
    lengths = getattr(dataset, "source_lengths", lambda: None)()
    if lengths is None:
        return None
    return float(np.mean([lengths[e["index"]] for e in examples]))


def scratch_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="oracle-kd-bench-")
