"""The one store of frozen teachers' outputs, shared by `experiment` and `train --teacher`.

A teacher's frame log-probabilities on a data set are computed once and kept
under STORE/<key>/, where the key is a digest of the teacher checkpoint's bytes
and the data set's identity: a different teacher, or the same teacher on other
data, never finds another's outputs. Each entry holds every example's own frame
count, float16 log-probs (or, with `top_k`, the k best labels per frame and
their log-probs, for large vocabularies) and a `meta.json` that says what it is
and how many bytes it takes on disk. The log-probs are raw arrays with every
example's frames one after another (no padding), written batch by batch as the
teacher runs and memory-mapped by students: a store larger than memory works.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from oracle_kd.data import clean, dataset_identity, source_lengths
from oracle_kd.io import InputError, atomic_path, atomic_write_json, claim, file_digest
from oracle_kd.vocab import ctc_min_frames


class TeacherOutputs:
    """One store entry: outputs[i] -> (log_probs (frames_i, classes) float32, frames_i).

    The values are memory-mapped: a store larger than memory is paged in as examples
    are read, and a loader worker (forked, or given a pickled copy) maps the files
    itself rather than receiving their contents. Pages read stay in the reader's
    resident set while the map is open, so after REMAP_BYTES the files are mapped
    anew: over an epoch the reader holds a window of the store, not all of it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.frames = np.load(self.folder / "frames.npy")  # (examples,) int64: 8 bytes an example in memory
        self.top_k = self.meta["top_k"]
        self.classes = self.meta["classes"]
        self.ragged = self.meta.get("layout") == RAGGED  # else the padded .npy layout of older entries
        self.starts = np.concatenate([[0], np.cumsum(self.frames)]) if self.ragged else None
        self._map()

    def _map(self):
        self._since_map = 0  # bytes read through the current map
        if not self.ragged:  # (examples, max frames, classes or k), padding frames all zeros
            self.values = np.load(self.folder / "log_probs.npy", mmap_mode="r")
            self.indices = np.load(self.folder / "indices.npy", mmap_mode="r") if self.top_k else None
            return
        shape = (int(self.starts[-1]), self.meta["width"])  # all examples' frames, one after another
        self.values = _map_rows(self.folder / VALUES, np.float16, shape)
        self.indices = _map_rows(self.folder / INDICES, np.int32, shape) if self.top_k else None

    def __getstate__(self):  # a pickled np.memmap would carry the whole file
        return {k: v for k, v in self.__dict__.items() if k not in ("values", "indices")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._map()

    def __len__(self):
        return len(self.frames)

    def _rows(self, array, i: int, n: int):
        return array[self.starts[i] : self.starts[i] + n] if self.ragged else array[i, :n]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        n = int(self.frames[i])
        if self._since_map > REMAP_BYTES:
            self._map()  # the old map goes with its last reference: rows are returned as copies
        self._since_map += READ_COST + n * self.values.shape[-1] * (2 + 4 * bool(self.top_k))
        values = np.asarray(self._rows(self.values, i, n), dtype=np.float32)
        if not self.top_k:
            return values, n
        # the k best labels keep their log-probs; the rest of the mass is spread evenly over the others
        rest = np.clip(1.0 - np.exp(values).sum(-1, keepdims=True), 1e-8, None)
        dense = np.broadcast_to(np.log(rest / max(1, self.classes - self.top_k)), (n, self.classes)).copy()
        np.put_along_axis(dense, np.asarray(self._rows(self.indices, i, n), dtype=np.int64), values, axis=-1)
        return dense, n


REMAP_BYTES = 32 << 20  # bytes mapped in by reads before a reader maps the store's files anew (see TeacherOutputs)
READ_COST = 64 << 10  # what Linux may map around a read's page fault besides the row (see scene_text.lmdb_reader)
RAGGED = "ragged"  # meta.json "layout": each example's frames follow the previous example's, no padding
VALUES, INDICES = "log_probs.bin", "indices.bin"  # raw float16 and int32 arrays (frames in all, width)


def _map_rows(path: Path, dtype, shape: tuple[int, int]) -> np.ndarray:
    if shape[0] == 0:  # mmap refuses an empty file (every example skipped)
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def teacher_outputs(store: str | Path, checkpoint: str | Path, task, dataset: Dataset, top_k: int | None = None,
                    device: str | torch.device = "cpu", batch_size: int = 128, say=None) -> TeacherOutputs:
    """The store entry of teacher `checkpoint` on `dataset`, computed (once, under a lock
    that other processes wait on) when it is not there yet."""
    from oracle_kd.checkpoint import load_model

    digest, data = file_digest(checkpoint), dataset_identity(dataset)
    key = entry_key(digest, data, top_k or 0)
    folder = Path(store) / key

    def compute():
        teacher_task, model, meta = load_model(checkpoint, device=device)
        if teacher_task.name != task.name:
            raise InputError(f"{checkpoint} is a {teacher_task.name} model, not {task.name}")
        if say:
            say(f"teacher outputs of {checkpoint} on {len(dataset)} examples")
        # batches as the teacher was trained on them: a log-mel teacher of a waveform student still gets features
        write_entry(folder, model, teacher_task, dataset, top_k, device, batch_size,
                    {"teacher_checkpoint": str(checkpoint), "teacher_digest": digest, "teacher_kind": meta["kind"],
                     "data": data})

    compute_once(store, key, folder / "meta.json", compute)
    return TeacherOutputs(folder)


def entry_key(digest: str, data: str, kept) -> str:
    """A store entry's name: the teacher's digest, the data's identity and what is kept (top-k, targets)."""
    return hashlib.sha1(f"{digest}|{data}|{kept}".encode()).hexdigest()[:16]


def compute_once(store: str | Path, key: str, done: Path, compute) -> None:
    """compute() unless `done` (written last by it) exists, under the entry's lock: another
    process computing the same entry is waited for, not repeated."""
    if not done.exists():
        with claim(Path(store) / f".{key}.lock", wait=True):
            if not done.exists():
                compute()


def module_outputs(store: str | Path, name: str, model: torch.nn.Module, task, dataset: Dataset,
                   top_k: int | None = None, device: str | torch.device = "cpu", batch_size: int = 128
                   ) -> TeacherOutputs:
    """The store entry of an in-memory teacher `model` (any module with the models' forward),
    keyed by a digest of its weights as a checkpoint's entry is by the file's."""
    digest, data = state_digest(model), dataset_identity(dataset)
    key = entry_key(digest, data, top_k or 0)
    folder = Path(store) / key
    compute_once(store, key, folder / "meta.json", lambda: write_entry(
        folder, model.to(device), task, dataset, top_k, device, batch_size,
        {"teacher_checkpoint": None, "teacher_name": name, "teacher_digest": digest,
         "teacher_kind": type(model).__qualname__, "data": data}))
    return TeacherOutputs(folder)


def state_digest(model: torch.nn.Module) -> str:
    """sha1 of a module's class name and weights (names, dtypes, shapes and values)."""
    digest = hashlib.sha1(type(model).__qualname__.encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def write_entry(folder: Path, model, task, dataset: Dataset, top_k: int | None, device, batch_size: int, meta: dict):
    """Run the frozen teacher over clean (un-augmented) sources, in data set order; it is
    given the labels if it reads them. Each batch's frames go straight to the files, so
    an entry is never held in memory whole. An example found unusable when read (lazy
    user data; training skips it too) keeps 0 frames."""
    from oracle_kd.diagnostics import finish_summary, loader, summarize_chunk

    model.eval()
    frames, summary, classes, width, after = np.zeros(len(dataset), dtype=np.int64), None, 0, 0, -1
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack, clean(dataset):
        files = [stack.enter_context(open(stack.enter_context(atomic_path(folder / name)), "wb"))
                 for name in ([VALUES, INDICES] if top_k else [VALUES])]
        for batch in loader(task, dataset, batch_size, skipped=[]):
            batch = batch.to(device)
            log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
            log_probs, frame_lengths = log_probs.float().cpu(), frame_lengths.cpu()
            classes = log_probs.shape[-1]
            summary = summarize_chunk(log_probs, frame_lengths, summary)
            values, ids = log_probs.topk(top_k, dim=-1) if top_k else (log_probs, None)
            width = values.shape[-1]
            for row, (i, n) in enumerate(zip(batch.indices.tolist(), frame_lengths.tolist())):
                if i <= after:  # the layout needs data set order
                    raise ValueError(f"the loader gave example {i} after example {after}")
                frames[i], after = n, i
                files[0].write(values[row, :n].half().numpy().tobytes())
                if top_k:
                    files[1].write(ids[row, :n].to(torch.int32).numpy().tobytes())
    with atomic_path(folder / "frames.npy", size=frames.nbytes) as tmp, open(tmp, "wb") as f:
        np.save(f, frames)
    names = [VALUES, "frames.npy"] + ([INDICES] if top_k else [])
    size = sum((folder / name).stat().st_size for name in names)
    atomic_write_json(folder / "meta.json", {**meta, "examples": len(frames), "classes": classes,
                                             "top_k": top_k, "dtype": "float16", "layout": RAGGED, "width": width,
                                             "bytes": size, "posteriors": finish_summary(summary)})


def check_frames(name: str, teacher_frames: torch.Tensor, student_frames: torch.Tensor, indices=None) -> None:
    """A teacher whose frame count differs from the student's cannot be distilled frame by frame."""
    differ = (teacher_frames.to(student_frames.device) != student_frames).nonzero().flatten()
    if len(differ):
        r = int(differ[0])
        example = f"example {int(indices[r])}" if indices is not None else f"row {r}"
        raise InputError(f"teacher {name} gives {int(teacher_frames[r])} frames for {example}, the student "
                         f"{int(student_frames[r])}: teacher and student must share the frame rate")


def distilled_targets(store: str | Path, checkpoint: str | Path, task, dataset: Dataset, frame_count=None,
                      device: str | torch.device = "cpu", say=None) -> RetargetedDataset:
    """`dataset` with each example's target replaced by teacher `checkpoint`'s decoded output
    for its source: sequence-level KD (Kim and Rush, 2016). Decoded once (beam search, for a
    model with its own) and kept in the store as JSON beside the frame outputs, keyed the same
    way. `frame_count(example) -> int` (the student's frames): an output too long for CTC there
    keeps the reference target instead (counted in the entry's `kept_reference`)."""
    from oracle_kd.checkpoint import load_model
    from oracle_kd.diagnostics import decode

    digest, data = file_digest(checkpoint), dataset_identity(dataset)
    key = entry_key(digest, data, "targets")
    path = Path(store) / f"{key}.targets.json"

    def compute():
        teacher_task, model, _ = load_model(checkpoint, device=device)
        if say:
            say(f"decoded targets of {checkpoint} on {len(dataset)} examples")
        with clean(dataset):
            decoded = decode(teacher_task, model, dataset)
        texts = [None] * len(dataset)  # an example found unusable when read keeps its reference (it is skipped)
        for i, text in zip(decoded.indices, decoded.texts):
            texts[i] = text
        kept = 0
        for i, text in enumerate(texts):
            ids = task.tokenizer.encode(text) if text is not None else None
            if not ids or (frame_count and ctc_min_frames(ids) > frame_count(dataset[i])):
                texts[i], kept = dataset[i]["text"], kept + 1
        Path(store).mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"teacher_checkpoint": str(checkpoint), "teacher_digest": digest, "data": data,
                                 "kept_reference": kept, "texts": texts})

    compute_once(store, key, path, compute)
    entry = json.loads(path.read_text())
    return RetargetedDataset(dataset, entry["texts"], f"{data}+targets:{key}", entry["kept_reference"])


class RetargetedDataset(Dataset):
    """A data set whose examples carry other targets (`text`), e.g. a teacher's outputs."""

    def __init__(self, dataset: Dataset, texts: list[str], identity: str, kept_reference: int = 0):
        if len(texts) != len(dataset):
            raise ValueError(f"{len(texts)} targets for {len(dataset)} examples")
        self.dataset, self.texts, self._identity, self.kept_reference = dataset, texts, identity, kept_reference

    @property
    def augment(self):
        return getattr(self.dataset, "augment", None)

    @augment.setter
    def augment(self, value):
        self.dataset.augment = value

    def identity(self) -> str:
        return self._identity

    def source_lengths(self):
        return source_lengths(self.dataset)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return {**self.dataset[i], "text": self.texts[i]}
