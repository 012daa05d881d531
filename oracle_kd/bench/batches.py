"""Realistic batches: examples of each task's own default data, grouped as training groups them.

A benchmark on noise with a few labels per example measures another workload
than training's (speech sentences of several words, not one second of noise), so
the examples come from the task's generated data (a small sample of the preset's
data config) and a batch is one that training's length-bucketed sampler makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from oracle_kd.config import load_preset
from oracle_kd.data import LengthBucketSampler, pad_targets, source_lengths
from oracle_kd.skips import SkipLog

# Translation's default data is read from package archives that it downloads; the benchmarks
# use it only when it is already cached, and otherwise this offline toy (numbers.py).
OFFLINE_DATA = {"translation": {"text_source": "numbers", "vocab_size": 200}}


@dataclass
class BenchData:
    train: torch.utils.data.Dataset  # training split (augmented as in training), sampled from
    val: torch.utils.data.Dataset
    folder: Path
    description: str  # where the examples come from, for the report
    corpus_train_examples: int  # the whole default corpus's training split, where it is at hand; else 0


def bench_data(task, preset: str, cache: Path, n_train: int, n_eval: int = 16, progress: bool = False) -> BenchData:
    """A sample of `n_train` training examples of the task's default data (preset `preset`'s
    data config with smaller splits), generated into `cache` once."""
    data_cfg = dict(load_preset(task.name, preset)["data"])
    small = {"n_train": n_train, "n_val": n_eval, "n_test": n_eval}
    folder, description = None, f"{task.name} default data (preset {preset}), {n_train} training examples"
    whole = False  # the whole corpus at hand (cached), not a small generated sample
    if task.name in OFFLINE_DATA:
        folder = task.cached_data(data_cfg, cache)  # the whole cached corpus: no download
        if folder is None:
            data_cfg = {**data_cfg, **OFFLINE_DATA[task.name]}
            description = f"{task.name} offline toy data {OFFLINE_DATA[task.name]} (default data not cached)"
        else:
            whole = True
            description = f"{task.name} default data (preset {preset}, cached at {folder}), {n_train} of its " \
                          "training examples"
    if folder is None:
        folder = task.prepare_data({**data_cfg, **small}, cache, progress=progress)
    skips = SkipLog(quiet=True)
    model_cfg = load_preset(task.name, preset)["models"]["student"]
    train = task.dataset(folder, "train", skips, train=True, model_cfg=model_cfg)
    val = task.dataset(folder, "val", skips, train=False, model_cfg=model_cfg)
    return BenchData(Sample(train, n_train), Sample(val, n_eval), folder, description, len(train) if whole else 0)


class Sample(torch.utils.data.Dataset):
    """`n` examples of `base` drawn with a fixed seed (all of them if it has no more), in
    `base`'s order, re-indexed from 0, with their source lengths (for length bucketing)."""

    def __init__(self, base, n: int, seed: int = 0):
        self.base = base
        keep = np.random.default_rng(seed).permutation(len(base))[:n]
        self.rows = np.sort(keep)
        lengths = source_lengths(base)
        self.lengths = None if lengths is None else np.asarray(lengths)[self.rows]

    def __len__(self):
        return len(self.rows)

    def source_lengths(self):
        return self.lengths

    def identity(self) -> str:
        from oracle_kd.data import dataset_identity

        return f"{dataset_identity(self.base)}:sample:{len(self.rows)}"

    def __getitem__(self, i):
        return {**self.base[int(self.rows[i])], "index": i}


def training_batches(dataset, batch_size: int, seed: int = 0) -> list[list[int]]:
    """The index batches of one training epoch, as training's sampler forms them (similar
    lengths together), or shuffled where the sources all have one length."""
    lengths = source_lengths(dataset)
    if lengths is None:
        order = np.random.default_rng(seed).permutation(len(dataset)).tolist()
    else:
        order = list(LengthBucketSampler(lengths, batch_size, seed))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [b for b in batches if len(b) == batch_size] or batches[:1]


def batch_at_length(dataset, batch_size: int, quantile: float = 0.5, seed: int = 0) -> list[dict]:
    """The examples of the training batch at `quantile` (0.5: the median) of the batches'
    total source length, the batches formed as `training_batches` forms them."""
    batches = training_batches(dataset, batch_size, seed)
    lengths = source_lengths(dataset)
    if lengths is not None:
        batches = sorted(batches, key=lambda b: (int(np.sum(lengths[b])), b))
    pick = batches[min(len(batches) - 1, int(quantile * len(batches)))]
    return [dataset[i] for i in pick]


def typical_batch(task, batch_size: int, min_labels: int = 3, max_labels: int = 8):
    """A collated batch of the task's synthetic example inputs with 3-8 random label ids each,
    the same on every call (for a task without data at hand). The ids are set as the targets
    themselves: decoding them to text and encoding the text again changes them under a subword
    tokenizer (pieces merge into other pieces), so texts are derived from the ids, not the
    other way round."""
    rng = torch.Generator().manual_seed(0)
    label_ids = [torch.randint(1, task.tokenizer.num_classes, (int(torch.randint(min_labels, max_labels + 1, (1,),
                                                                                 generator=rng)),),
                               generator=rng).tolist() for _ in range(batch_size)]
    batch = task.collate(task.example_inputs(batch_size))  # labels empty: set below
    batch.targets, batch.target_lengths = pad_targets(label_ids)
    batch.texts = [task.tokenizer.decode(ids) for ids in label_ids]
    return batch
