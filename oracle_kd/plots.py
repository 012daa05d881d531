"""The report's plots: learning curves of every arm and teacher, and frame spikes of
every model on a few test examples (drawn from results.json and the checkpoints)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from oracle_kd.report import arm_order  # noqa: E402

def plot_curves(results: dict, path: Path) -> Path | None:
    """Validation primary metric of the student arms per epoch and per wall second (one
    colour per arm, one line style per seed), and of the teachers per wall second."""
    key = f"val_{results['metric']}"
    students = results["students"]
    arms = [(arm, run.get("seed", i), run.get("history") or [])
            for arm in arm_order(students) for i, run in enumerate(students[arm].get("runs") or [])]
    teachers = [(name, None, t.get("history") or []) for name, t in results["teachers"].items()]
    arms, teachers = ([(n, s, [h for h in hist if h.get(key) is not None]) for n, s, hist in group]
                      for group in (arms, teachers))
    arms, teachers = [a for a in arms if a[2]], [t for t in teachers if t[2]]
    if not arms and not teachers:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    draw(axes[0], arms, "epoch", key)
    draw(axes[1], arms, "seconds", key, legend=False)  # the same arms as on the left
    draw(axes[2], teachers, "seconds", key)
    for ax, title in zip(axes, ("student arms", "student arms", "teachers")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch" if ax is axes[0] else "wall seconds")
        ax.set_ylabel(f"validation {results['metric']}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(ax, series: list[tuple[str, int | None, list[dict]]], x: str, key: str, legend: bool = True) -> None:
    """(name, seed or None, history) curves on `ax`: one colour per name, one line style per seed."""
    names = list(dict.fromkeys(name for name, _, _ in series))
    seeds = list(dict.fromkeys(seed for _, seed, _ in series))
    colours = plt.cm.tab10 if len(names) <= 10 else plt.cm.tab20
    styles = ["-", "--", ":", "-."]
    for name, seed, history in series:
        ax.plot([h.get(x, float("nan")) for h in history], [h[key] for h in history],
                color=colours(names.index(name) % colours.N), linestyle=styles[seeds.index(seed) % len(styles)],
                marker="o", ms=3, label=name if seed is None else f"{name} seed {seed}")
    if series and legend:
        ax.legend(fontsize=6)


def model_checkpoints(results: dict, out: Path) -> tuple[dict[str, Path], list[str]]:
    """Every teacher's checkpoint and every arm's first-seed checkpoint that exists, in
    report order; and the names of the models whose checkpoint was not found."""
    wanted = {name: t.get("checkpoint") for name, t in results["teachers"].items()}
    for arm in arm_order(results["students"]):
        s = results["students"][arm]
        wanted[arm] = (s.get("checkpoints") or [None])[0] or ((s.get("runs") or [{}])[0].get("checkpoint"))
    found = {name: locate_checkpoint(p, out) for name, p in wanted.items() if p}
    return {n: p for n, p in found.items() if p}, [n for n in wanted if not found.get(n)]


def locate_checkpoint(recorded: str | Path, out: str | Path) -> Path | None:
    """The checkpoint as recorded, or else the longest tail of its path (two parts at least,
    e.g. teachers/oracle/best.safetensors) under OUT: a run folder moved or copied elsewhere."""
    path = Path(recorded)
    if not path.is_absolute() and (Path(out) / path).exists():  # results.json records paths relative to OUT
        return Path(out) / path
    if path.exists():
        return path
    parts = path.parts
    for start in range(1, len(parts) - 1):
        candidate = Path(out).joinpath(*parts[start:])
        if candidate.exists():
            return candidate
    return None


def plot_spikes(task, checkpoints: dict[str, str | Path], dataset, n: int, path: Path) -> Path:
    import torch

    from oracle_kd.checkpoint import load_model
    from oracle_kd.decoding import greedy_decode

    examples = [dataset[i] for i in range(min(n, len(dataset)))]
    batch = task.collate(examples)
    names = list(checkpoints)
    fig, axes = plt.subplots(len(names), len(examples), figsize=(3.2 * len(examples), 1.1 * len(names)), squeeze=False)
    with torch.inference_mode():
        for r, name in enumerate(names):
            _, model, _ = load_model(checkpoints[name])
            model.eval()
            if getattr(model, "decodes_itself", False):  # no CTC frames, so no spikes: its output only
                for col, ids in enumerate(model.generate(batch.sources, batch.source_lengths)):
                    axes[r][col].set_title(f"{name}: {task.tokenizer.decode(ids)!r}", fontsize=8, loc="left")
                    axes[r][col].axis("off")
                continue
            log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
            for col, hyp in enumerate(greedy_decode(log_probs, frame_lengths)):
                title = f"{name}: {task.tokenizer.decode(hyp.ids)!r}"
                task.plot_spikes(axes[r][col], examples[col], title, hyp.ids, hyp.frames, int(frame_lengths[col]))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
