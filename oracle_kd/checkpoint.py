"""Model checkpoints that load without executing code.

A checkpoint is a safetensors file: the model's tensors plus a JSON header
(`oracle_kd` metadata key) naming the task, the model kind and its config.
Anything else offered as a checkpoint is opened with
`torch.load(weights_only=True)`, which refuses pickles that would run code.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oracle_kd.io import InputError, atomic_path
from oracle_kd.safety import NOT_FOUND, BadFile, open_regular

FORMAT_VERSION = 1


def save_model(path: str | Path, model: torch.nn.Module, meta: dict) -> Path:
    """Write `model`'s weights and `meta` (task, kind, config, ...) atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"oracle_kd": json.dumps({"format": FORMAT_VERSION, **meta})}
    size = sum(t.numel() * t.element_size() for t in tensors.values())  # the header adds a little
    with atomic_path(path, size=size) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


MODEL_KINDS = ("student", "conventional", "oracle")
CUSTOM_KIND = "custom"  # a module of the user's own, trained by `distil`; rebuilt only if its config says how
EXTRA_KINDS = {"translation": ("autoregressive",)}  # a task's own model families beyond those
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, meta) of a checkpoint; InputError with a one-line reason if unusable.

    The format is told by the file's first bytes, not its name; the metadata is checked
    (a task, a model kind, a config mapping) before any tensor is read."""
    path = Path(path)
    try:
        f, size = open_regular(path, limit=1 << 62)  # any size: tensors are read memory-mapped
    except BadFile as e:
        raise InputError(f"checkpoint not found: {path}" if e.reason == NOT_FOUND else f"checkpoint {e}") from None
    with f:
        head = f.read(min(size, 8 + MAX_HEADER_BYTES))
    kind = sniff(head, size)
    if kind == "safetensors":
        meta = check_meta(path, _safetensors_meta(path, head))
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable safetensors checkpoint ({e})") from None
        return state, meta
    if kind == "zip":
        state, meta = _read_torch_file(path, size)
        return state, check_meta(path, meta)
    if kind == "pickle":
        raise InputError(f"refusing to load {path}: an old-style PyTorch pickle (not a zip file), which could run "
                         "code or declare tensors of any size; give the .safetensors checkpoint")
    what = "an ONNX model (what `export` writes)" if path.suffix.lower() == ".onnx" else "neither safetensors nor a PyTorch file"
    raise InputError(f"{path}: not a checkpoint ({what}); give the .safetensors file that training wrote")


def sniff(head: bytes, size: int) -> str:
    """"safetensors", "zip" (torch.save since 1.6), "pickle" (older torch.save) or "other", from a file's first bytes."""
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if n <= size - 8 and n <= MAX_HEADER_BYTES and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "other"


def _safetensors_meta(path: Path, head: bytes):
    """The `oracle_kd` metadata of a safetensors header, read by us (no tensor is touched)."""
    n = int.from_bytes(head[:8], "little")
    try:
        header = json.loads(head[8 : 8 + n].decode("utf-8"))
        text = header.get("__metadata__", {}).get("oracle_kd")
        return None if text is None else json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError, RecursionError) as e:
        raise InputError(f"{path}: not a readable safetensors checkpoint (its header: {type(e).__name__})") from None


def check_meta(path: Path, meta) -> dict:
    """`meta`, if it names a known task and model kind and holds a config mapping; else InputError."""
    from oracle_kd.tasks import TASKS

    if not isinstance(meta, dict) or "task" not in meta or "kind" not in meta:
        raise InputError(f"{path}: not an oracle-kd checkpoint (no task/kind metadata)")
    if not isinstance(meta["task"], str) or meta["task"] not in TASKS:
        raise InputError(f"{path}: unknown task {str(meta['task'])[:40]!r} in its metadata (known: {', '.join(sorted(TASKS))})")
    kinds = MODEL_KINDS + EXTRA_KINDS.get(meta["task"], ()) + (CUSTOM_KIND,)
    if not isinstance(meta["kind"], str) or meta["kind"] not in kinds:
        raise InputError(f"{path}: unknown model kind {str(meta['kind'])[:40]!r} in its metadata "
                         f"(known: {', '.join(kinds)})")
    if not isinstance(meta.setdefault("config", {}), dict):
        raise InputError(f"{path}: the model config in its metadata is a {type(meta['config']).__name__}, not a mapping")
    return meta


def _read_torch_file(path: Path, size: int):
    import zipfile

    try:  # torch.save stores its records uncompressed: nothing in the file may claim more bytes than it has
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
        packed = any(i.compress_type != zipfile.ZIP_STORED for i in infos)
        if packed or sum(i.file_size for i in infos) > size:
            raise InputError(f"{path}: not a PyTorch checkpoint (a zip file whose records are compressed or "
                             "larger than the file)")
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable checkpoint (a broken zip file: {e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f" ({named.group(1)})" if named else ""
        raise InputError(f"refusing to load {path}: it holds objects beyond plain weights{what}, which could run code") from None
    except Exception as e:  # truncated or foreign files
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj.get("meta"), str):
        try:
            return obj["state_dict"], json.loads(obj["meta"])
        except json.JSONDecodeError:
            raise InputError(f"{path}: not an oracle-kd checkpoint (its meta is not JSON)") from None
    raise InputError(f"{path}: not an oracle-kd checkpoint (expected safetensors, or a dict with state_dict and meta)")


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """(task, model in eval mode on `device`, meta) from a checkpoint written by `save_model`."""
    from oracle_kd.tasks import get_task

    state, meta = read_checkpoint(path)
    if meta["kind"] == CUSTOM_KIND and "builder" not in meta["config"]:
        module = str(meta["config"].get("module", "a module"))[:100]
        raise InputError(f"{path}: the weights of your own {module} (written by `distil`), which oracle-kd cannot "
                         "rebuild from a file: build the module in Python and load them into it with "
                         "safetensors.torch.load_file")
    task = get_task(meta["task"])
    if "task_state" in meta:  # what the task learnt from data (a tokenizer), before the model is sized by it
        try:
            task.restore(meta["task_state"])
        except Exception as e:  # foreign bytes reach sentencepiece's parser, which raises its own types
            raise InputError(f"{path}: its task state (tokenizer) cannot be read ({type(e).__name__})") from None
    check_shapes(path, task, meta, state)
    model = task.build_model(meta["kind"], meta["config"])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not match the model they claim to be ({str(e).splitlines()[0]})") from None
    return task, model.eval().to(device), meta


class _Larger(Exception):
    pass


def check_shapes(path, task, meta: dict, state: dict[str, torch.Tensor]) -> None:
    """InputError unless the model `meta` describes has exactly the tensors of `state`, by name and
    shape. It is built on the meta device (no memory), and the build stops as soon as it holds
    more elements than the file: a forged header describing a huge model allocates nothing."""
    from torch.nn.modules.module import (register_module_buffer_registration_hook,
                                         register_module_parameter_registration_hook)

    held = sum(t.numel() for t in state.values())
    # Twice what the file holds: building may register a tensor twice (weight norm registers
    # the weight, then the two factors that replace it), and a forged model is far larger.
    limit, counted = 2 * held, [0]

    def count(module, name, tensor):
        counted[0] += 0 if tensor is None else tensor.numel()
        if counted[0] > limit:
            raise _Larger

    hooks = [register_module_parameter_registration_hook(count), register_module_buffer_registration_hook(count)]
    try:
        with torch.device("meta"):
            skeleton = task.build_model(meta["kind"], meta["config"])
    except _Larger:
        raise InputError(f"{path}: its metadata describes a model with more weights than the {held:,} the file holds") from None
    except (InputError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: the model its metadata describes cannot be built ({str(e).splitlines()[0][:200]})") from None
    finally:
        for hook in hooks:
            hook.remove()
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        shaped = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        why = (f"{missing[0]} is missing" if missing else f"{extra[0]} is unexpected" if extra
               else f"{shaped[0]} is {list(have[shaped[0]])}, the model's {list(want[shaped[0]])}")
        raise InputError(f"{path}: weights do not match the model they claim to be ({why})")
