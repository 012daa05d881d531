"""Dataclass configs and YAML presets: sizes and choices are data, not code."""

from __future__ import annotations

import dataclasses
import re
import typing
from importlib import resources

import yaml

from oracle_kd.io import InputError

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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


def apply_overrides(cfg: dict, overrides: list[str] | None) -> dict:
    """`cfg` with `KEY.PATH=VALUE` overrides (VALUE read as YAML), e.g. `models.oracle.target_context=5`.

    Every key but the last must already exist; a misspelt last key is caught
    where the section is read (`from_dict` names the known keys)."""
    out = dict(cfg)  # sections on an override's path are copied below, the rest is shared
    for item in overrides or []:
        path, sep, raw = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise InputError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. models.oracle.target_context=5")
        node = out
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if not isinstance(child, dict):
                raise InputError(f"--set {item!r}: {'.'.join(keys[:depth + 1])} is not a section of the preset "
                                 f"(sections here: {', '.join(k for k, v in node.items() if isinstance(v, dict))})")
            node[key] = child = dict(child)
            node = child
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise InputError(f"--set {item!r}: the value is not YAML ({err})") from None
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        node[keys[-1]] = value
    return out


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
