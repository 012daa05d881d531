"""What every task hands the models: batches of sources and labels with lengths."""

from __future__ import annotations

import hashlib
import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from oracle_kd.lazy import SKIPPED
from oracle_kd.skips import Skip


@dataclass
class Batch:
    sources: torch.Tensor  # task-shaped: (batch, 1, H, W) images, (batch, time, mels) audio, ...
    source_lengths: torch.Tensor  # (batch,) valid length of each source along its time axis
    targets: torch.Tensor  # (batch, max_target_length) label ids, padded with 0
    target_lengths: torch.Tensor  # (batch,)
    texts: list[str]  # reference label strings
    indices: torch.Tensor  # (batch,) position of each example in its data set
    spans: torch.Tensor | None = None  # (batch, max_target_length, 2) label spans in frame units, NaN unknown
    teacher_log_probs: dict[str, torch.Tensor] | None = None  # teacher -> (batch, frames, classes), for KD
    teacher_frames: dict[str, torch.Tensor] | None = None  # teacher -> (batch,) its frame count per example
    skipped: list = field(default_factory=list)  # skips.Skip of examples found unusable when read (lazy data)

    def to(self, device) -> "Batch":
        """The batch's tensors on `device` (texts and indices stay where they are)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.sources), move(self.source_lengths), move(self.targets), move(self.target_lengths),
                     self.texts, self.indices, move(self.spans),
                     None if self.teacher_log_probs is None else {k: move(v) for k, v in self.teacher_log_probs.items()},
                     None if self.teacher_frames is None else {k: move(v) for k, v in self.teacher_frames.items()},
                     self.skipped)


@dataclass
class Skipped:
    """What a loader yields for a batch none of whose examples could be read (see `dropping_skips`)."""

    skipped: list  # skips.Skip, one per example of the batch

    def to(self, device) -> "Skipped":
        return self


def dropping_skips(collate):
    """`collate` of the examples that could be read; the others (skip markers of a
    `lazy.LazyDataset`) travel back as `skipped`, from the loader worker that found
    them to the process that lists them. A batch with nothing left is a `Skipped`."""
    def collate_fn(examples: list[dict]):
        marked = [isinstance(e, dict) and SKIPPED in e for e in examples]
        kept = [e for e, m in zip(examples, marked) if not m]
        skipped = [Skip(e["source"], e[SKIPPED]) for e, m in zip(examples, marked) if m]
        if not kept:
            return Skipped(skipped)
        batch = collate(kept)
        if skipped:  # a Batch lists none by default
            batch.skipped = skipped
        return batch

    return collate_fn


def pad_targets(label_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, longest) label ids padded with 0 (at least one column), and their lengths: one
    numpy assignment for the batch, not a tensor per row (part of every step's data wait)."""
    lengths = np.array([len(ids) for ids in label_ids], dtype=np.int64)
    targets = np.zeros((len(label_ids), max(1, int(lengths.max(initial=0)))), dtype=np.int64)
    targets[np.arange(targets.shape[1])[None, :] < lengths[:, None]] = np.fromiter(
        itertools.chain.from_iterable(label_ids), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(targets), torch.from_numpy(lengths)


class WithTeachers(Dataset):
    """A data set whose examples also carry frozen teachers' frame log-probabilities.

    `outputs` maps a teacher's name to its `store.TeacherOutputs` on this data set
    (computed once, on un-augmented sources, read memory-mapped)."""

    def __init__(self, base: Dataset, outputs: dict):
        for name, out in outputs.items():
            if len(out) != len(base):
                raise ValueError(f"teacher {name}: outputs for {len(out)} examples, the data set has {len(base)}")
        self.base, self.outputs = base, outputs

    def __len__(self):
        return len(self.base)

    def source_lengths(self):
        return source_lengths(self.base)

    def identity(self) -> str:
        return dataset_identity(self.base)

    def __getitem__(self, i):
        example = self.base[i]
        if SKIPPED in example:  # found unusable when read: dropped by the collate
            return example
        example["teachers"] = {name: out[i] for name, out in self.outputs.items()}  # (log_probs, frames)
        return example


def with_teachers(collate):
    """The task's collate, plus the teachers' outputs the examples carry (the core attaches
    them; a task's collate knows nothing of teachers). Each teacher's log-probs are padded
    to the longest frame count of the batch."""

    def collate_fn(examples: list[dict]) -> Batch:
        batch = collate(examples)
        if isinstance(examples[0], dict) and "teachers" in examples[0]:
            batch.teacher_log_probs, batch.teacher_frames = {}, {}
            for name in examples[0]["teachers"]:
                rows = [torch.from_numpy(np.asarray(e["teachers"][name][0], dtype=np.float32)) for e in examples]
                batch.teacher_log_probs[name] = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
                batch.teacher_frames[name] = torch.tensor([e["teachers"][name][1] for e in examples])
        return batch

    return collate_fn


def dataset_identity(dataset: Dataset) -> str:
    """What a data set is, for run folders and the teacher output store: the data set's own
    `identity()` when it has one, else a digest of its examples' sources and labels."""
    own = getattr(dataset, "identity", None)
    if callable(own):
        return own()
    examples = getattr(dataset, "examples", None)
    if examples is not None:
        digest = hashlib.sha1()
        for e in examples:
            digest.update(f"{e.get('source', '')}\t{e.get('text', '')}\n".encode("utf-8", "replace"))
        return f"examples:{len(examples)}:{digest.hexdigest()[:16]}"
    return f"{type(dataset).__name__}:{len(dataset)}"


class ListDataset(Dataset):
    """Examples held in memory (user data sets after reading and checking).

    `augment` marks the examples for on-the-fly augmentation in the task's
    collate (training only); see `clean`. `lengths`, when the sources vary in
    length, lets training batch similar lengths together."""

    def __init__(self, examples: list[dict], augment: bool = False, lengths: list[int] | None = None):
        self.examples, self.augment = examples, augment
        self.lengths = None if lengths is None else np.asarray(lengths)

    def __len__(self):
        return len(self.examples)

    def source_lengths(self):
        return self.lengths

    def __getitem__(self, i):
        return {**self.examples[i], "index": i, "augment": self.augment}


@contextmanager
def clean(dataset: Dataset):
    """Augmentation off while inside: teachers' posteriors are computed on clean sources."""
    before = getattr(dataset, "augment", None)
    if before is not None:
        dataset.augment = False
    try:
        yield dataset
    finally:
        if before is not None:
            dataset.augment = before


def source_lengths(dataset: Dataset) -> np.ndarray | None:
    """Each example's source length (any unit that orders them), when the data set
    has variable-length sources and can tell without loading them; else None."""
    method = getattr(dataset, "source_lengths", None)
    return None if method is None else method()


class LengthBucketSampler(Sampler[int]):
    """A new random order every epoch in which each run of `batch_size` indices has
    similar source lengths, so that batches carry little padding.

    The shuffled indices are cut into pools of `pool` batches; each pool is sorted
    by length and cut into batches, and the batches are shuffled. The order depends
    only on (seed, epoch), so a resumed run sees the epochs it would have seen.
    Under DDP every process draws the same batches and takes every `world_size`-th
    one from `rank` on, padded with repeats to the same number of full batches.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, pool: int = 50,
                 rank: int = 0, world_size: int = 1):
        self.lengths, self.batch_size, self.seed, self.pool = np.asarray(lengths), batch_size, seed, pool
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def __len__(self):
        if self.world_size == 1:
            return len(self.lengths)
        batches = -(-len(self.lengths) // self.batch_size)
        return -(-batches // self.world_size) * self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        shuffled = [batches[b] for b in rng.permutation(len(batches))]
        if self.world_size == 1:
            yield from np.concatenate(shuffled).tolist()
            return
        # the one short batch (the last pool's tail) goes last, so every shard's stream cuts into
        # whole buckets (with one process it stays where it falls: in-flight runs keep their order)
        shuffled.sort(key=lambda b: len(b) < self.batch_size)
        mine = shuffled[self.rank :: self.world_size]
        yield from np.resize(np.concatenate(mine) if mine else shuffled[0], len(self)).tolist()


def hashed_split(key: str, percent: dict[str, int]) -> str:
    """The split (a key of `percent`, whose values sum to 100) that `key` falls in, by a
    stable hash (not Python's salted hash()): the same text lands in the same split on
    every machine, whatever else the corpus holds."""
    bucket = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 100
    for name, share in percent.items():
        if bucket < share:
            return name
        bucket -= share
    raise ValueError(f"split percentages must sum to 100, got {percent}")
