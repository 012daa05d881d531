"""One training run on PyTorch Lightning: a CTC model, optionally distilled from
precomputed teacher posteriors, early-stopped on the validation metric.

The LightningModule holds the model, the loss and the optimizer; the Trainer
the engineering (devices, DDP, checkpoints). `fit` is what the CLI and the
experiment runner call.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from oracle_kd.checkpoint import save_model
from oracle_kd.config import KDTerm, TrainConfig
from oracle_kd.data import LengthBucketSampler, Skipped, dataset_identity, dropping_skips, source_lengths, with_teachers
from oracle_kd.decoding import greedy_decode
from oracle_kd.diagnostics import inputs
from oracle_kd.io import InputError, atomic_path, atomic_write_json
from oracle_kd.losses import ctc, kd_term
from oracle_kd.skips import SkipLog
from oracle_kd.store import check_frames
from oracle_kd.tracking import make_logger

# Lightning's start-up banners (accelerator lines, tips) drown the runner's own progress lines
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

LOG_EVERY_N_STEPS = 10  # steps between logged step losses (fewer in an epoch shorter than this)


@dataclass
class RunResult:
    checkpoint: str
    params: int
    epochs: int  # epochs up to the best validation score
    train_seconds: float  # wall time up to the best validation score
    total_seconds: float
    best_val: dict
    history: list = field(default_factory=list)


class NonFiniteLoss(RuntimeError):
    pass


class CTCModule(pl.LightningModule):
    def __init__(self, task, model, cfg: TrainConfig, kd: list[KDTerm] | None, train_set: Dataset, val_set: Dataset,
                 seed: int, skips: SkipLog | None = None, skips_file: Path | None = None):
        super().__init__()
        self.task, self.model, self.cfg, self.kd = task, model, cfg, kd
        self.train_set, self.val_set, self.seed = train_set, val_set, seed
        self.skips, self.skips_file = skips, skips_file  # where examples found unusable when read are listed
        self._skipped: list = []  # skips.Skip this process's loaders found this epoch (lazy user data)
        self._val_decoded: dict[int, tuple[str, str]] = {}  # example index -> (hypothesis, reference)
        self._train_losses: dict[str, list[torch.Tensor]] = {}  # this epoch's step losses, by logged name

    # Loaders are made here, in each process, once its rank is known (DDP).
    def train_dataloader(self):
        return loader(self.task, self.train_set, self.cfg.batch_size, self.seed,
                      self.trainer.global_rank, self.trainer.world_size, self.cfg.num_workers)

    def val_dataloader(self):
        return loader(self.task, self.val_set, self.cfg.batch_size, None, self.trainer.global_rank,
                      self.trainer.world_size, self.cfg.num_workers)

    def forward(self, batch):
        return self.model(*inputs(batch))

    def training_step(self, batch, batch_idx):
        self._skipped += batch.skipped
        if isinstance(batch, Skipped):
            # no example of the batch could be read: a zero loss that still reaches every weight,
            # so that this process joins DDP's gradient all-reduce as the others do
            return sum(p.sum() for p in self.model.parameters()) * 0.0
        if hasattr(self.model, "sequence_loss"):  # a model with its own loss (the autoregressive teacher)
            return self._record(batch_idx, self.model.sequence_loss(*inputs(batch)), {})
        log_probs, frame_lengths = self(batch)
        loss = ctc_loss = ctc(log_probs, frame_lengths, batch.targets, batch.target_lengths)
        kd_losses = []  # each KD term, weighted
        for term in self.kd or []:
            check_frames(term.teacher, batch.teacher_frames[term.teacher], frame_lengths, batch.indices)
            teacher = batch.teacher_log_probs[term.teacher]
            if teacher.shape[1] < log_probs.shape[1]:  # the batch's longest example has no teacher frames past its own
                teacher = torch.nn.functional.pad(teacher, (0, 0, 0, log_probs.shape[1] - teacher.shape[1]))
            kd_losses.append(term.weight * kd_term(term.method, log_probs, teacher[:, : log_probs.shape[1]],
                                                   frame_lengths, batch.targets, batch.target_lengths, term.tau))
            loss = loss + kd_losses[-1]
        parts = {"train_ctc_loss": ctc_loss}
        if kd_losses:
            parts["train_kd_loss"] = torch.stack(kd_losses).sum()
        return self._record(batch_idx, loss, parts, batch)

    def _record(self, batch_idx, loss, parts: dict, batch=None):
        """Check and log a step's loss (and its parts); return it."""
        if not torch.isfinite(loss):
            where = f", examples {batch.indices[:8].tolist()}..." if batch is not None else ""
            raise NonFiniteLoss(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, "
                f"step {self.global_step} (batch {batch_idx}{where})"
            )
        losses = {"train_loss": loss, **parts}
        for name, value in losses.items():
            self._train_losses.setdefault(name, []).append(value.detach())
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step's update uses
        self.log_dict({**{f"{k}_step": v.detach() for k, v in losses.items()}, "lr": lr}, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self._skipped += batch.skipped
        if isinstance(batch, Skipped):
            return
        if getattr(self.model, "decodes_itself", False):  # greedy search of its own: fast enough per epoch
            ids = self.model.generate(batch.sources, batch.source_lengths, beam=1)
        else:
            log_probs, frame_lengths = self(batch)
            ids = [hyp.ids for hyp in greedy_decode(log_probs, frame_lengths)]
        for index, hyp, ref in zip(batch.indices.tolist(), ids, batch.texts):
            self._val_decoded[index] = (self.task.vocab.decode(hyp), ref)

    def on_validation_epoch_end(self):
        decoded, self._val_decoded = self._val_decoded, {}
        if self.trainer.world_size > 1:
            # Under DDP each process decoded a shard (padded with repeats to equal size):
            # score the whole split once, not an average of per-shard corpus scores.
            shards = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shards, decoded)
            decoded = {i: pair for shard in shards for i, pair in shard.items()}
        pairs = [decoded[i] for i in sorted(decoded)]
        scores = self.task.score([h for h, _ in pairs], [r for _, r in pairs])
        for name, value in scores.items():  # the same on every process
            self.log(f"val_{name}", value, prog_bar=name == self.task.metric)

    def epoch_train_loss(self, name: str = "train_loss") -> float | None:
        """Mean training loss (`name`: or its CTC or KD part) of the current epoch so far, over
        its steps (validation runs before the epoch ends)."""
        steps = self._train_losses.get(name)
        return float(torch.stack(steps).mean()) if steps else None

    def on_train_epoch_end(self):
        # floats: each process logs its own means, as history.json records rank 0's
        self.log_dict({f"{name}_epoch": self.epoch_train_loss(name) for name in self._train_losses}, on_epoch=True)
        self._train_losses = {}
        self.list_skips()

    def list_skips(self):
        """Examples the loaders found unusable this epoch (training and validation, every
        process's share) join the skip log; rank 0 rewrites skipped.tsv when some are new."""
        found, self._skipped = self._skipped, []
        if self.trainer.world_size > 1:
            shards = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shards, found)
            found = [skip for shard in shards for skip in shard]
        if self.trainer.is_global_zero and self.skips is not None and self.skips.add_new(found):
            self.skips.write(self.skips_file)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))  # max_epochs x batches per epoch
        warm = min(self.cfg.warmup_steps, total // 4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warm, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_factor(step: int, warm: int, total: int) -> float:
    """The learning rate of optimizer step `step` (from 0) over the configured one: a linear
    warm-up over `warm` steps, then a cosine decay to 5 % over the rest of `total` steps."""
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm)))) * 0.95 + 0.05


class RunRecorder(pl.Callback):
    """History, wall time to the best epoch, the best weights (safetensors) and an
    atomic `last.ckpt` after every epoch, so a run resumes where it stopped.

    Each epoch's row also carries `cpu_seconds`: this process's CPU time so far
    (all its threads), which a shared or suspended machine hardly moves; a run
    resumed from a checkpoint that did not count it leaves it out."""

    def __init__(self, out_dir: Path, metrics, meta: dict, cfg: TrainConfig):
        self.out_dir, self.spec, self.meta, self.cfg = out_dir, metrics, meta, cfg
        self.metric, self.higher = metrics.primary, metrics.higher_is_better
        self.history, self.best, self.best_epoch, self.best_seconds = [], None, -1, 0.0
        self.finished = False  # max_epochs reached, or early stopping past min_epochs
        self.elapsed_before = 0.0  # wall time of earlier sessions of this run
        self.cpu_before: float | None = 0.0  # CPU time of earlier sessions (None: not counted then)
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._start

    def cpu_elapsed(self) -> float | None:
        return None if self.cpu_before is None else self.cpu_before + time.process_time() - self._cpu_start

    def on_fit_start(self, trainer, pl_module):
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, pl_module):
        # runs after EarlyStopping's own epoch-end check, so last.ckpt holds its updated state
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        val = {k[4:]: v for k, v in logged.items() if k.startswith("val_")}
        if self.metric not in val:  # an epoch end replayed on resume, with no validation behind it
            return
        # the module's own epoch-end hook (which resets the training losses) runs after this one
        row = {"epoch": trainer.current_epoch + 1, "seconds": round(self.elapsed(), 2),
               "train_loss": pl_module.epoch_train_loss(), **{f"val_{k}": v for k, v in val.items()}}
        if self.cpu_before is not None:
            row["cpu_seconds"] = round(self.cpu_elapsed(), 2)
        self.history.append(row)
        epochs = len(self.history)
        self.finished = epochs >= self.cfg.max_epochs or (trainer.should_stop and epochs >= self.cfg.min_epochs)
        if self.improves(val):
            self.best, self.best_epoch, self.best_seconds = val, row["epoch"], row["seconds"]
            if trainer.is_global_zero:
                save_model(self.out_dir / "best.safetensors", pl_module.model, self.meta)
        if trainer.is_global_zero:
            atomic_write_json(self.out_dir / "history.json", self.history)
            with atomic_path(self.out_dir / "last.ckpt") as tmp:
                trainer.save_checkpoint(tmp)
        else:  # a collective call under DDP; only rank 0 writes
            trainer.save_checkpoint(self.out_dir / "last.ckpt")

    def improves(self, val: dict) -> bool:
        """Better on the primary metric; on a tie (e.g. 0 word accuracy on the plateau), better
        on the task's tie-break metric."""
        if self.best is None:
            return True
        new, old = val[self.metric], self.best[self.metric]
        if new != old:
            return new > old if self.higher else new < old
        tie = self.spec.tie_break
        if tie not in val or tie not in self.best:
            return False
        return val[tie] > self.best[tie] if self.spec.tie_break_higher else val[tie] < self.best[tie]

    def state_dict(self):
        return {"history": json.dumps(self.history), "best": json.dumps(self.best), "best_epoch": self.best_epoch,
                "best_seconds": self.best_seconds, "elapsed": self.elapsed(), "finished": self.finished,
                "cpu_elapsed": -1.0 if self.cpu_before is None else self.cpu_elapsed()}

    def load_state_dict(self, state):
        self.history, self.best = json.loads(state["history"]), json.loads(state["best"])
        self.best_epoch, self.best_seconds = state["best_epoch"], state["best_seconds"]
        self.elapsed_before = state["elapsed"]
        self.finished = bool(state.get("finished", False))
        cpu = state.get("cpu_elapsed", -1.0)  # absent in checkpoints of older versions
        self.cpu_before = None if cpu < 0 else cpu


def restore_if_finished(last: Path, recorder: RunRecorder) -> bool:
    """True (and the recorder restored) when `last` already holds a finished run, as
    after a stop between the last epoch and writing result.json: Lightning would
    refuse to fit a run that has nothing left to do. The recorder's own state says
    whether the run had finished (max_epochs, or early stopping past min_epochs)."""
    state = torch.load(last, map_location="cpu", weights_only=True)
    mine = state.get("callbacks", {}).get(type(recorder).__qualname__)
    if mine is None or not mine.get("finished", False):
        return False
    recorder.load_state_dict(mine)
    return True


def loader(task, dataset: Dataset, batch_size: int, seed: int | None = None, rank: int = 0,
           world_size: int = 1, num_workers: int = 0) -> DataLoader:
    """Training order (`seed` given): shuffled, in batches of similar length when the
    sources vary in length. Evaluation order: by length (scores are corpus-level).
    Under DDP (`world_size` > 1) each process gets its share, the same number of
    batches on every process (padded with repeats, as DistributedSampler does)."""
    lengths = source_lengths(dataset)
    if seed is not None and lengths is not None:
        sampler = LengthBucketSampler(lengths, batch_size, seed, rank=rank, world_size=world_size)
    elif seed is not None:
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed) if world_size > 1 else None
    else:
        order = np.arange(len(dataset)) if lengths is None else np.argsort(lengths, kind="stable")
        if world_size > 1:
            order = np.resize(order[rank::world_size], -(-len(dataset) // world_size))
        sampler = order.tolist()
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=seed is not None and sampler is None,
                      collate_fn=dropping_skips(with_teachers(task.collate)), num_workers=num_workers,
                      persistent_workers=num_workers > 0)


def run_identity(task, kind: str, model_cfg: dict, train_set: Dataset, val_set: Dataset, cfg: TrainConfig,
                 kd: list[KDTerm] | None, seed: int) -> dict:
    """What a run folder holds: a folder is only ever resumed or returned for this same run."""
    outputs = getattr(train_set, "outputs", {})
    return json.loads(json.dumps({
        "task": task.name, "kind": kind, "model": model_cfg,
        "train": {k: v for k, v in asdict(cfg).items() if k not in TrainConfig.ENGINE},
        "kd": [asdict(t) for t in kd] if kd else None,
        "teachers": {name: out.meta["teacher_digest"] for name, out in outputs.items()},
        "data": {"train": dataset_identity(train_set), "val": dataset_identity(val_set)},
        "seed": seed}))


def check_run_folder(out_dir: Path, identity: dict) -> None:
    """Claim `out_dir` for the run `identity`, or refuse it when it holds another run."""
    path = out_dir / "run.json"
    if path.exists():
        held = json.loads(path.read_text())
        if held != identity:
            what = ", ".join(k for k in identity if held.get(k) != identity.get(k))
            plural = "," in what or what == "teachers"
            raise InputError(f"{out_dir} holds another run (its {what} differ{'' if plural else 's'}); "
                             "use another --out")
        return
    if any((out_dir / name).exists() for name in ("result.json", "last.ckpt", "best.safetensors")):
        raise InputError(f"{out_dir} holds a run that does not say what it is (no run.json); use another --out")
    atomic_write_json(path, identity)


def fit(task, kind: str, model_cfg: dict, train_set: Dataset, val_set: Dataset, cfg: TrainConfig,
        out_dir: Path, kd: list[KDTerm] | None = None, seed: int = 0, progress: bool = True,
        model: torch.nn.Module | None = None, callbacks: list | None = None,
        skips: SkipLog | None = None) -> RunResult:
    """Train model `kind` (student | conventional | oracle) and return where its best weights are.
    `model`: a module to train instead of the task's `kind` (`distil.py`; `model_cfg` then describes it).
    `callbacks`: more Lightning callbacks (the benchmarks time the epoch's steps with one).
    `skips`: the data sets' skips found so far; examples found unusable when read (lazy user
    data) join it, and it is written to OUT/skipped.tsv when they do.

    `train_set` must carry the teachers' outputs (data.WithTeachers) that the `kd` terms name.
    Re-run with the same `out_dir` and the same run, it resumes from `last.ckpt`; a finished
    run (`result.json` present) is returned as it is; a folder that holds another run is refused.
    """
    out_dir = Path(out_dir)
    missing = [t.teacher for t in kd or [] if t.teacher not in getattr(train_set, "outputs", {})]
    if missing:
        raise InputError(f"KD from {', '.join(missing)}: the training set carries no outputs of that teacher")
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = run_identity(task, kind, model_cfg, train_set, val_set, cfg, kd, seed)
    check_run_folder(out_dir, identity)
    done = out_dir / "result.json"
    if done.exists():  # the checkpoint is read beside result.json, so a run folder can be moved or copied
        res = RunResult(**json.loads(done.read_text()))
        return replace(res, checkpoint=str(out_dir / Path(res.checkpoint).name))
    pl.seed_everything(seed, workers=True, verbose=False)
    model = task.build_model(kind, model_cfg) if model is None else model
    meta = {"task": task.name, "kind": kind, "config": model_cfg,
            "kd": [asdict(t) for t in kd] if kd else None, "seed": seed}
    state = task.state() if hasattr(task, "state") else None
    if state:  # what the task learnt from data (a tokenizer), or a non-default setting, goes with the weights
        meta["task_state"] = state

    module = CTCModule(task, model, cfg, kd, train_set, val_set, seed, SkipLog() if skips is None else skips,
                       out_dir / "skipped.tsv")
    recorder = RunRecorder(out_dir, task.metrics, meta, cfg)
    mode = "max" if task.metrics.higher_is_better else "min"
    logger = make_logger(cfg.logger, out_dir)
    logger.log_hyperparams(identity)
    steps = -(-len(train_set) // (cfg.batch_size * cfg.devices * cfg.num_nodes))  # per epoch and process, about
    trainer = pl.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, precision=cfg.precision,
        strategy="ddp" if cfg.devices > 1 or cfg.num_nodes > 1 else "auto",
        use_distributed_sampler=False,  # `loader` shards the data itself, keeping length buckets whole
        max_epochs=cfg.max_epochs, min_epochs=min(cfg.min_epochs, cfg.max_epochs), gradient_clip_val=cfg.grad_clip,
        max_time={"minutes": cfg.max_minutes} if cfg.max_minutes else None,
        callbacks=[pl.callbacks.EarlyStopping(f"val_{task.metrics.primary}", patience=cfg.patience, mode=mode,
                                              strict=False), recorder, *(callbacks or [])],
        num_sanity_val_steps=0, logger=logger, log_every_n_steps=max(1, min(LOG_EVERY_N_STEPS, steps)),
        enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, default_root_dir=str(out_dir),
    )
    last = out_dir / "last.ckpt"
    if not (last.exists() and restore_if_finished(last, recorder)):
        trainer.fit(module, ckpt_path=str(last) if last.exists() else None, weights_only=True)

    result = RunResult(
        checkpoint=str(out_dir / "best.safetensors"),
        params=sum(p.numel() for p in model.parameters()),
        epochs=recorder.best_epoch,
        train_seconds=recorder.best_seconds,
        total_seconds=round(recorder.elapsed(), 2),
        best_val=recorder.best,
        history=recorder.history,
    )
    if trainer.is_global_zero:
        atomic_write_json(done, asdict(result))
    return result
