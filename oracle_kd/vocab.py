"""Label alphabets for CTC: index 0 is always the blank."""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLANK = 0  # CTC blank index, shared by every task and model


@dataclass(frozen=True)
class Vocab:
    """An ordered character set; label ids are 1..len(chars), 0 is the blank.

    A character tokenizer (`oracle_kd.tasks.base.Tokenizer`): each label is one character."""

    chars: str

    @property
    def num_classes(self) -> int:
        return len(self.chars) + 1  # + blank

    @property
    def labels(self) -> list[str]:
        """The string of each label id 1..num_classes-1 (blank excluded)."""
        return list(self.chars)

    def encode(self, text: str) -> list[int]:
        """Label ids of `text`; raises KeyError naming the first character outside the set."""
        index = self._index
        try:
            return [index[c] for c in text]
        except KeyError as e:
            raise KeyError(f"character {e.args[0]!r} is not in the label set") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars))

    def outside(self, text: str) -> str:
        """The characters of `text` that are not in the set (in order of appearance, unique)."""
        seen = dict.fromkeys(c for c in text if c not in self._index)
        return "".join(seen)

    @property
    def _index(self) -> dict[str, int]:
        cache = self.__dict__.get("_cached_index")
        if cache is None:
            cache = {c: i + 1 for i, c in enumerate(self.chars)}
            object.__setattr__(self, "_cached_index", cache)
        return cache

    def tensor(self, text: str) -> torch.Tensor:
        return torch.tensor(self.encode(text), dtype=torch.long)


def ctc_min_frames(ids: list[int]) -> int:
    """Fewest frames a CTC path for `ids` needs: one per label, plus a blank between repeats."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)
