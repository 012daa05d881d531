"""Dataclass configs and YAML presets: sizes and choices are data, not code.

A preset (oracle_kd/presets/<task>.yaml, `defaults` merged under the named
preset, then `--set` overrides) loads into a typed `ExperimentConfig`: an
unknown key or a value of the wrong type is a one-line error naming the key,
before any work starts. Teachers and student arms are lists in the preset:
adding an arm is a few lines of YAML (or a `--set`), not code.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources

import yaml

from oracle_kd.io import InputError

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
PAPER_ARMS = ("student_ctc", "student_kd_conventional", "student_kd_oracle")  # PAPER.md's comparison, always present
KD_METHODS = ("frame", "blank_aware", "guided", "alignment", "sequence")  # see losses.kd_term
TERM_KEYS = ("tau", "weight")  # grid keys that set every KD term of an arm; other keys set TrainConfig


@dataclass
class TrainConfig:
    max_epochs: int = 10
    patience: int = 3  # epochs without validation improvement before stopping
    min_epochs: int = 1  # CTC models sit on a blank plateau first; do not stop during it
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 5.0
    max_minutes: float | None = None  # safety cap on wall time per run
    # engineering: where and how, not what (set from the command line; not part of a run's identity but precision)
    accelerator: str = "auto"  # Lightning's: auto, cpu, gpu, cuda, mps, ...
    devices: int = 1  # >1, or num_nodes > 1, trains with DDP
    num_nodes: int = 1
    precision: str = "32-true"  # Lightning's: 32-true, bf16-mixed, 16-mixed
    num_workers: int = 0  # data loader worker processes
    logger: str = "csv"  # experiment tracking: csv, tensorboard, wandb or mlflow (see tracking.py)

    ENGINE = ("accelerator", "devices", "num_nodes", "num_workers", "max_minutes", "logger")


@dataclass
class KDTerm:
    """One distillation loss of a student arm: loss = ctc + sum of weight * method(student, teacher)."""

    method: str = "frame"  # one of KD_METHODS
    teacher: str = ""  # a teacher of the preset (its name in `teachers`)
    tau: float = 1.0  # softening temperature (frame and blank_aware KD)
    weight: float = 1.0


@dataclass
class TeacherSpec:
    """A teacher: a model family of the task (`models` section) with its own overrides."""

    model: str = "oracle"  # conventional | oracle | student
    set: dict = field(default_factory=dict)  # overrides of models[model], e.g. {target_context: 5}
    train: dict = field(default_factory=dict)  # overrides of train[model]
    copy_test: bool | None = None  # default: for Oracle-family teachers


@dataclass
class ArmSpec:
    """A student arm: no teacher (plain CTC), or KD terms from one teacher or several."""

    kd: list[KDTerm] = field(default_factory=list)
    grid: list[dict] | None = None  # tried on validation at seed 0; None: the preset's grid.kd or grid.plain
    # sequence-level KD: a teacher whose decoded outputs for the training sources are the
    # student's CTC targets (the KD terms' teachers then read those targets too)
    targets: str = ""

    @property
    def teachers(self) -> list[str]:
        return list(dict.fromkeys([*(term.teacher for term in self.kd), *([self.targets] if self.targets else [])]))


@dataclass
class GridDefaults:
    kd: list[dict] = field(default_factory=lambda: [{}])  # for arms with KD terms
    plain: list[dict] = field(default_factory=lambda: [{}])  # for arms without (e.g. learning rates)


@dataclass
class DiagnosticsConfig:
    copy_test_examples: int = 500
    spike_examples: int = 4
    bootstrap_resamples: int = 2000


@dataclass
class ExperimentConfig:
    seeds: int = 1
    data: dict = field(default_factory=dict)  # the task's data config (checked by the task)
    models: dict[str, dict] = field(default_factory=dict)  # model family -> its config (checked by building it)
    teachers: dict[str, TeacherSpec] = field(default_factory=dict)
    train: dict[str, TrainConfig] = field(default_factory=dict)  # model family -> training budget
    arms: dict[str, ArmSpec] = field(default_factory=dict)
    grid: GridDefaults = field(default_factory=GridDefaults)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)

    def arm_grid(self, arm: str) -> list[dict]:
        spec = self.arms[arm]
        if spec.grid is not None:
            return spec.grid
        return self.grid.kd if spec.kd else self.grid.plain

    def teacher_model(self, name: str) -> dict:
        spec = self.teachers[name]
        return deep_merge(self.models[spec.model], spec.set)

    def teacher_train(self, name: str) -> TrainConfig:
        spec = self.teachers[name]
        return dataclasses.replace(self.train[spec.model], **spec.train)


def experiment_config(task, preset: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """The typed, checked config of `preset` for `task` (a task object), with `--set` overrides."""
    raw = apply_overrides(load_preset(task.name, preset), overrides)
    cfg = from_dict(ExperimentConfig, raw)
    check_experiment(cfg, task)
    return cfg


def check_experiment(cfg: ExperimentConfig, task) -> None:
    """What the types alone cannot say; every problem is an InputError naming the key."""
    if cfg.seeds < 1:
        raise InputError(f"seeds: at least 1, not {cfg.seeds}")
    for family in ("student", "conventional", "oracle"):
        if family not in cfg.models or family not in cfg.train:
            raise InputError(f"models.{family} and train.{family}: every preset needs both")
    for name, spec in cfg.teachers.items():
        if spec.model not in cfg.models:
            raise InputError(f"teachers.{name}.model: {spec.model!r} is not a model family ({', '.join(cfg.models)})")
        bad = sorted(set(spec.train) - {f.name for f in dataclasses.fields(TrainConfig)})
        if bad:
            raise InputError(f"teachers.{name}.train: unknown keys {', '.join(bad)}")
        check_model(task, spec.model, cfg.teacher_model(name), f"teachers.{name}")
    check_model(task, "student", cfg.models["student"], "models.student")
    missing = [arm for arm in PAPER_ARMS if arm not in cfg.arms]
    if missing:
        raise InputError(f"arms: PAPER.md's arms must be present, missing {', '.join(missing)}")
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - set(TrainConfig.ENGINE)
    sizes = {}
    for arm, spec in cfg.arms.items():
        for i, term in enumerate(spec.kd):
            if term.method not in KD_METHODS:
                raise InputError(f"arms.{arm}.kd.{i}.method: {term.method!r}; choose from {', '.join(KD_METHODS)}")
            if term.teacher not in cfg.teachers:
                raise InputError(f"arms.{arm}.kd.{i}.teacher: {term.teacher!r} is not a teacher of this preset "
                                 f"({', '.join(cfg.teachers)})")
        if spec.targets and spec.targets not in cfg.teachers:
            raise InputError(f"arms.{arm}.targets: {spec.targets!r} is not a teacher of this preset "
                             f"({', '.join(cfg.teachers)})")
        grid = cfg.arm_grid(arm)
        if not grid:
            raise InputError(f"arms.{arm}.grid: at least one point")
        for point in grid:
            if not isinstance(point, dict):
                raise InputError(f"arms.{arm}.grid: each point is a mapping, not {point!r}")
            allowed = (set(TERM_KEYS) if spec.kd else set()) | train_keys
            bad = sorted(set(point) - allowed)
            if bad:
                raise InputError(f"arms.{arm}.grid: unknown keys {', '.join(bad)} (allowed: {', '.join(sorted(allowed))})")
            hints = typing.get_type_hints(TrainConfig)
            for key, value in point.items():
                coerce(value, float if key in TERM_KEYS else hints[key], f"arms.{arm}.grid.{key}")
        sizes[arm] = len(grid)
    if len(set(sizes.values())) > 1:  # PAPER.md: no arm gains from selection alone
        raise InputError("arms: every arm needs a grid of the same size, got "
                         + ", ".join(f"{arm} {n}" for arm, n in sizes.items()))


def check_model(task, family: str, model_cfg: dict, where: str) -> None:
    try:
        task.build_model(family, model_cfg)
    except (InputError, TypeError, ValueError) as err:
        raise InputError(f"{where}: {err}") from None


def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass `cls` from a (possibly nested) dict, checking keys and types:
    an unknown key or a wrong type is an InputError naming it (`where` is its path)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    data = dict(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        at = f"{where}: " if where else ""
        raise InputError(f"{at}unknown {cls.__name__} keys: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    for name, value in data.items():
        data[name] = coerce(value, hints[name], f"{where}.{name}" if where else name)
    return cls(**data)


def coerce(value, hint, where: str):
    """`value` checked against type `hint` (dataclasses, list[...], dict[str, ...], unions, scalars)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except InputError as err:
                errors.append(str(err))
        raise errors[0] if len(errors) == 1 else InputError(f"{where}: {value!r} is not a {hint}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{where}.{i}") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a mapping, got {value!r}")
        return {k: coerce(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else value
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string, got {value!r}")
        return value
    if hint in (dict, list) and not isinstance(value, hint):
        raise InputError(f"{where}: expected a {'mapping' if hint is dict else 'list'}, got {value!r}")
    return value


def grid_point(terms: list[KDTerm], train: TrainConfig, point: dict) -> tuple[list[KDTerm], TrainConfig]:
    """The KD terms and training config of one grid point: `tau`/`weight` set every term."""
    kd = {k: v for k, v in point.items() if k in TERM_KEYS}
    rest = {k: v for k, v in point.items() if k not in TERM_KEYS}
    return [dataclasses.replace(t, **kd) for t in terms], dataclasses.replace(train, **rest)


def load_preset(task: str, preset: str) -> dict:
    """The preset `preset` of `task` from oracle_kd/presets/<task>.yaml; `defaults` merged under it.
    A teacher or arm set to null (`student_kd_oracle: null`) is one of the defaults' left out."""
    text = resources.files("oracle_kd").joinpath("presets", f"{task}.yaml").read_text()
    presets = yaml.safe_load(text)
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r} for task {task}: choose from {', '.join(k for k in presets if k != 'defaults')}")
    return merge_preset(presets, preset)


def merge_preset(presets: dict, preset: str) -> dict:
    """`presets[preset]` over `presets["defaults"]`, without the teachers and arms it sets to null."""
    cfg = deep_merge(presets.get("defaults", {}), presets[preset])
    for section in ("teachers", "arms"):
        if isinstance(cfg.get(section), dict):
            cfg[section] = {name: spec for name, spec in cfg[section].items() if spec is not None}
    return cfg


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
