"""Task registry: a task is the only place that knows its modality."""

from __future__ import annotations

from oracle_kd.io import InputError

TASKS = {
    "scene-text": "oracle_kd.tasks.scene_text.task:SceneTextTask",
    "speech": "oracle_kd.tasks.speech.task:SpeechTask",
    "translation": "oracle_kd.tasks.translation.task:TranslationTask",
}


def get_task(name: str, **options):
    """An instance of the task called `name` (imported on first use); `options` go to its
    constructor (speech: `sources="waveform"`, for models that read samples)."""
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}: choose from {', '.join(sorted(TASKS))}")
    module, _, cls = TASKS[name].partition(":")
    import importlib

    return getattr(importlib.import_module(module), cls)(**options)
