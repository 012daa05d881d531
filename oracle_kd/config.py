"""Dataclass configs and YAML presets: sizes and choices are data, not code."""

from __future__ import annotations

import dataclasses
import typing
from importlib import resources

import yaml

from oracle_kd.io import InputError

PRESETS = ("smoke", "quick", "full")


def from_dict(cls, data: dict | None):
    """Build dataclass `cls` from a (possibly nested) dict; unknown keys are an error."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} keys: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            data[name] = from_dict(hints[name], value)
    return cls(**data)


def load_preset(task: str, preset: str) -> dict:
    """The preset `preset` of `task` from oracle_kd/presets/<task>.yaml; `defaults` merged under it."""
    text = resources.files("oracle_kd").joinpath("presets", f"{task}.yaml").read_text()
    presets = yaml.safe_load(text)
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r} for task {task}: choose from {', '.join(k for k in presets if k != 'defaults')}")
    return deep_merge(presets.get("defaults", {}), presets[preset])


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
