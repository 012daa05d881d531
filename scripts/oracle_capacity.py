"""Oracle Teacher variants against the preset's: capacity, cost, label context.

The investigations behind the README's "Capacity, checked" paragraphs. Scene text
(`full` data): does a lighter Oracle reach its best in less of the conventional
teacher's time? Speech: does a local label context (`target_context`) let the
Oracle use the labels of long sentences, and does it reopen the copy? Three
steps, each resumable:

    python scripts/oracle_capacity.py bench --out ~/runs/light      # step cost, side by side
    python scripts/oracle_capacity.py train light --out ~/runs/light
    python scripts/oracle_capacity.py eval light --out ~/runs/light  # test, alignment, copy test
    python scripts/oracle_capacity.py train context3 --task speech --preset quick --out ~/runs/ctx

`bench` times training steps of every model round-robin in one process (medians,
1 thread, batch 64), so ratios hold on a shared machine; wall times of `train`
depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from oracle_kd import diagnostics
from oracle_kd.bench import median_seconds, typical_batch
from oracle_kd.checkpoint import load_model
from oracle_kd.config import from_dict, load_preset
from oracle_kd.experiment import default_cache
from oracle_kd.losses import ctc
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task
from oracle_kd.training import TrainConfig, fit

def variants(task_name: str, cfg: dict, wanted: str = "") -> dict[str, dict]:
    """The preset's Oracle, `contextK` (label context of width K), `light` (scene text)."""
    base = cfg["models"]["oracle"]
    width = wanted.removeprefix("context")
    widths = {3, 5} | ({int(width)} if wanted.startswith("context") and width.isdigit() else set())
    found = {"oracle": base, **{f"context{k}": {**base, "target_context": k} for k in sorted(widths)}}
    if task_name == "scene-text":  # against the preset's encoder 16-128 channels, d_model 128, 2 layers (0.75M)
        found["light"] = {**base, "encoder": {**base["encoder"], "channels": [8, 16, 32, 64, 96]},
                          "d_model": 96, "layers": 1}  # 0.25M
    return found


def bench(task, cfg: dict, repeats: int = 15, batch_size: int = 64) -> dict:
    torch.manual_seed(0)
    models = {name: task.build_model("oracle", c) for name, c in variants(task.name, cfg).items()}
    models["conventional"] = task.build_model("conventional", cfg["models"]["conventional"])
    batch = typical_batch(task, batch_size)

    def ctc_step(model):
        model.train()
        log_probs, lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
        ctc(log_probs, lengths, batch.targets, batch.target_lengths).backward()
        model.zero_grad(set_to_none=True)

    cases = {name: (lambda m=model: ctc_step(m)) for name, model in models.items()}
    median = median_seconds(cases, repeats, warmup_rounds=2)
    return {name: {"params": sum(p.numel() for p in models[name].parameters()),
                   "median_step_seconds": round(median[name], 4),
                   "ratio_to_conventional": round(median[name] / median["conventional"], 3)} for name in models}


def train(task, cfg: dict, name: str, out: Path, cache: Path) -> dict:
    folder = task.prepare_data(cfg["data"], cache, progress=False)
    skips, model_cfg = SkipLog(), variants(task.name, cfg, name)[name]
    train_set, val_set = (task.dataset(folder, s, skips, train=s == "train", model_cfg=model_cfg) for s in ("train", "val"))
    res = fit(task, "oracle", model_cfg, train_set, val_set, from_dict(TrainConfig, cfg["train"]["oracle"]),
              out / name, seed=0, progress=False)
    return {"params": res.params, "epochs_to_best": res.epochs, "seconds_to_best": res.train_seconds,
            "validation": res.best_val}


def evaluate(task, cfg: dict, name: str, out: Path, cache: Path) -> dict:
    folder = task.prepare_data(cfg["data"], cache, progress=False)
    task, model, meta = load_model(out / name / "best.safetensors")
    test = task.dataset(folder, "test", SkipLog(), train=False, model_cfg=meta["config"])  # spans in its frames
    metrics, decoded = diagnostics.evaluate(task, model, test)
    return {"test": metrics, "alignment_accuracy": diagnostics.alignment_accuracy(decoded),
            "copy_test": diagnostics.copy_test(task, model, test, limit=1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["bench", "train", "eval"])
    parser.add_argument("name", nargs="?", default="light", help="oracle | light | contextK, e.g. context5 (train, eval)")
    parser.add_argument("--task", default="scene-text", choices=["scene-text", "speech"])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task, cfg = get_task(args.task), load_preset(args.task, args.preset)
    cache = args.cache or default_cache()
    if args.step == "bench":
        result = bench(task, cfg)
    elif args.step == "train":
        result = train(task, cfg, args.name, args.out, cache)
    else:
        result = evaluate(task, cfg, args.name, args.out, cache)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.step}-{args.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
