"""Deterministic parallel generation: results in task order, whatever the worker count."""

from __future__ import annotations

import multiprocessing


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
