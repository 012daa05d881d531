"""Deterministic parallel generation: results in task order, whatever the worker count."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path


def ordered_map(fn, tasks, init, state, workers: int):
    """Yield fn(task) for each task, in order; `init(state)` runs once per worker process.

    Workers are forked where the platform allows: spawn re-imports the caller's
    __main__, which breaks unguarded scripts and stdin. The generators that use
    this (image rendering, eSpeak synthesis) touch only numpy, PIL and a
    synchronous C library in the workers, never torch's thread pools.
    """
    if workers <= 1:
        init(state)
        yield from map(fn, tasks)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, init, (state,)) as pool:
        yield from pool.imap(fn, tasks)


def chunk_tasks(counts: dict[str, int], size: int) -> list[tuple[str, int, int]]:
    """(split, start, stop) work items of at most `size` examples, splits in the given order."""
    return [(split, start, min(start + size, n)) for split, n in counts.items() for start in range(0, n, size)]


def cache_is_complete(out_dir: Path, format_version: int, config: dict) -> bool:
    """True if `out_dir/meta.json` (written last by a generator) matches; otherwise the stale
    marker is removed, since the arrays beside it are about to change."""
    meta_path = Path(out_dir) / "meta.json"
    if not meta_path.exists():
        return False
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") == format_version and meta.get("config") == config:
        return True
    meta_path.unlink()
    return False
