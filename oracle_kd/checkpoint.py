"""Model checkpoints that load without executing code.

A checkpoint is a safetensors file: the model's tensors plus a JSON header
(`oracle_kd` metadata key) naming the task, the model kind and its config.
Anything else offered as a checkpoint is opened with
`torch.load(weights_only=True)`, which refuses pickles that would run code.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oracle_kd.io import InputError, atomic_path

FORMAT_VERSION = 1


def save_model(path: str | Path, model: torch.nn.Module, meta: dict) -> Path:
    """Write `model`'s weights and `meta` (task, kind, config, ...) atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"oracle_kd": json.dumps({"format": FORMAT_VERSION, **meta})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, meta) of a checkpoint; InputError with a one-line reason if unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("oracle_kd", "null") or "null")
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    else:
        state, meta = _read_torch_file(path)
    if not isinstance(meta, dict) or "task" not in meta or "kind" not in meta:
        raise InputError(f"{path}: not an oracle-kd checkpoint (no task/kind metadata)")
    return state, meta


def _read_torch_file(path: Path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"refusing to load {path}: it holds objects beyond plain weights, which could run code ({first})") from None
    except Exception as e:  # truncated or foreign files
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj.get("meta"), str):
        return obj["state_dict"], json.loads(obj["meta"])
    raise InputError(f"{path}: not an oracle-kd checkpoint (expected safetensors, or a dict with state_dict and meta)")


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """(task, model in eval mode on `device`, meta) from a checkpoint written by `save_model`."""
    from oracle_kd.tasks import get_task

    state, meta = read_checkpoint(path)
    task = get_task(meta["task"])
    if "task_state" in meta:
        task.restore(meta["task_state"])
    model = task.build_model(meta["kind"], meta.get("config", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not match the model they claim to be ({str(e).splitlines()[0]})") from None
    return task, model.eval().to(device), meta
