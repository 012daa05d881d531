"""User corpora too large for memory: an index built up front, each example decoded when read.

A task indexes a user data set with the checks that need no pixels or samples
(labels, transcripts, file existence, audio headers) and hands the index to a
`LazyDataset`; a data-loader worker decodes an example when it reads it and
runs the remaining checks there. An example found unusable then is not an
error: `__getitem__` returns a skip marker, the loader's collate drops it and
hands the skip back with the batch (`data.Batch.skipped`, or a `data.Skipped`
when no example of the batch is left), and whoever iterates the loader lists
it beside the skips found up front (`SkipLog.add_new`). Nothing is lost
silently, whichever process read it.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable

import numpy as np
from torch.utils.data import Dataset

SKIPPED = "skipped"  # key of a skip marker: {"skipped": reason, "source": ..., "text": ..., "index": i}


class Strings:
    """Many strings in one byte buffer with offsets, appended and read one at a time.

    A Python list of str held by a Dataset is copied, page by page, into every forked
    loader worker as reading it changes the reference counts, and costs some 50 bytes
    of object header a string; these two buffers cost the text and 8 bytes, and stay
    shared. "surrogatepass" round-trips any str (paths holding undecodable bytes, lone
    surrogates from JSON)."""

    def __init__(self, items: Iterable[str] = ()):
        self.data, self.offsets = bytearray(), array("q", [0])
        for item in items:
            self.append(item)

    def append(self, item: str) -> None:
        self.data += item.encode("utf-8", "surrogatepass")
        self.offsets.append(len(self.data))

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.data[self.offsets[i] : self.offsets[i + 1]].decode("utf-8", "surrogatepass")

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def take(self, rows) -> "Strings":
        return Strings(self[int(i)] for i in rows)


class LazyDataset(Dataset):
    """The examples of an index, decoded by `read(i)` when they are asked for.

    Subclasses hold the index and say how to read one example: `read(i)` returns
    (example dict, None) or (None, reason to skip it). `texts[i]` and `source(i)` are
    known without reading. `lengths`, when the sources vary in length, lets training
    batch similar lengths together; `augment` marks training examples as
    `data.ListDataset` does."""

    texts: Strings
    lengths: np.ndarray | None = None
    augment: bool = False

    def read(self, i: int) -> tuple[dict | None, str | None]:
        raise NotImplementedError

    def source(self, i: int) -> str:
        raise NotImplementedError

    def __len__(self):
        return len(self.texts)

    def source_lengths(self):
        return self.lengths

    def identity(self) -> str:
        """`data.dataset_identity` of the same examples held in memory (sources and labels):
        a run folder or teacher output made from the eager reader is found again."""
        digest = hashlib.sha1()
        for i in range(len(self)):
            digest.update(f"{self.source(i)}\t{self.texts[i]}\n".encode("utf-8", "replace"))
        return f"examples:{len(self)}:{digest.hexdigest()[:16]}"

    def __getitem__(self, i):
        example, problem = self.read(i)
        if problem is not None:
            return {SKIPPED: problem, "source": self.source(i), "text": self.texts[i], "index": i}
        return {**example, "index": i, "augment": self.augment}
