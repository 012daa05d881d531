"""Bad input is never lost silently: every skipped example is reported and listed."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Skip:
    source: str  # file (and line, "labels.tsv:17", or key, "data.mdb:label-000000017")
    reason: str


@dataclass
class SkipLog:
    """Collects skipped examples; prints one line per skip to stderr (up to `echo_limit`)."""

    echo_limit: int = 20
    quiet: bool = False
    items: list[Skip] = field(default_factory=list)

    def add(self, source: str, reason: str) -> None:
        self.items.append(Skip(str(source), reason))
        if not self.quiet and len(self.items) <= self.echo_limit:
            print(f"skipped {source}: {reason}", file=sys.stderr)
        elif not self.quiet and len(self.items) == self.echo_limit + 1:
            print("skipped: further skips are listed in skipped.tsv only", file=sys.stderr)

    def add_new(self, found) -> int:
        """Add the skips (`Skip`s) whose source is not listed yet, and say how many: an
        example found unusable when read is read again every epoch, and listed once."""
        known, added = {s.source for s in self.items}, 0
        for skip in found:
            if skip.source not in known:
                known.add(skip.source)
                self.add(skip.source, skip.reason)
                added += 1
        return added

    def __len__(self) -> int:
        return len(self.items)

    def write(self, path: str | Path) -> Path | None:
        """Write `source<TAB>reason` lines to `path` (only when something was skipped)."""
        if not self.items:
            return None
        from oracle_kd.io import atomic_write_text

        lines = ["source\treason"] + [f"{s.source}\t{s.reason}" for s in self.items]
        atomic_write_text(Path(path), "\n".join(lines) + "\n")
        if not self.quiet:
            print(f"{len(self.items)} examples skipped, listed in {path}", file=sys.stderr)
        return Path(path)


def require_usable(found: list, total: int, path, skipped: int, noun: str = "examples") -> list:
    """`found`, or an InputError when a data set is empty or every entry of it was skipped."""
    from oracle_kd.io import InputError

    if total == 0:
        raise InputError(f"no {noun} in {path}: the data set is empty")
    if not found:
        raise InputError(f"no usable {noun} in {path}: all {skipped} {noun} were skipped "
                         "(see the reasons reported for each)")
    return found
