"""The report's plots: learning curves of every arm and teacher, and frame spikes of
every model on a few test examples (drawn from results.json and the checkpoints).

Both are read by people deciding between arms, so nothing may hide: a curve of one
epoch is a single point, drawn as a marker of its arm's own shape and size (coinciding
points stay visible); spike labels are stacked in rows so that none overlaps another;
titles are cut to their panel's width; every example shows its reference text.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from oracle_kd.report import arm_order  # noqa: E402

MARKERS = "os^Dv<>pP*hX"  # one hollow marker shape per model of a panel
TITLE_POINTS = 7  # font size of panel titles
PANEL_INCHES = (4.8, 1.35)  # one spike panel's width and height, its title and ticks included


def plot_curves(results: dict, path: Path) -> Path | None:
    """Validation primary metric of the student arms per epoch and per wall second (one
    colour and marker per arm, one line style per seed), and of the teachers per wall second."""
    fig = curves_figure(results)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_figure(results: dict):
    """The figure `plot_curves` saves (None when no run has a validation score)."""
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
    return fig


def draw(ax, series: list[tuple[str, int | None, list[dict]]], x: str, key: str, legend: bool = True) -> None:
    """(name, seed or None, history) curves on `ax`: one colour and hollow marker per name, the
    first names' markers largest, so that points where arms coincide (one epoch, the same score)
    show as nested outlines; one line style per seed."""
    names = list(dict.fromkeys(name for name, _, _ in series))
    seeds = list(dict.fromkeys(seed for _, seed, _ in series))
    colours = plt.cm.tab10 if len(names) <= 10 else plt.cm.tab20
    styles = ["-", "--", ":", "-."]
    for name, seed, history in series:
        i = names.index(name)
        ax.plot([h.get(x, float("nan")) for h in history], [h[key] for h in history],
                color=colours(i % colours.N), linestyle=styles[seeds.index(seed) % len(styles)],
                marker=MARKERS[i % len(MARKERS)], ms=10 - 6 * i / max(1, len(names) - 1),
                mfc="none", mew=1.3, label=name if seed is None else f"{name} seed {seed}")
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
    """The first `n` examples of `dataset` with every model's frame spikes (`spikes_figure`)."""
    examples = [dataset[i] for i in range(min(n, len(dataset)))]
    fig = spikes_figure(task, checkpoints, examples)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def spikes_figure(task, models: dict, examples: list[dict]):
    """One column per example: on top the input with its reference text, below it one row per
    model (a checkpoint path or a module) with its decoded text and its spikes (each label at
    the frame where its run starts). The layout is fixed before anything is drawn, so that
    labels and titles are measured at the size they are saved at."""
    import torch

    from oracle_kd.checkpoint import load_model
    from oracle_kd.decoding import greedy_decode

    batch = task.collate(examples)
    names = list(models)
    rows, cols = len(names) + 1, len(examples)
    width, height = PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.1 / width * cols, right=1 - 0.1 / width * cols, top=1 - 0.3 / height,
                        bottom=0.25 / height, hspace=0.75, wspace=0.08)
    for col, example in enumerate(examples):
        task.plot_spikes(axes[0][col], example, f"reference: {batch.texts[col]!r}", [], [], 1)
    with torch.inference_mode():
        for r, name in enumerate(names, start=1):
            model = models[name] if isinstance(models[name], torch.nn.Module) else load_model(models[name])[1]
            model.eval()
            if getattr(model, "decodes_itself", False):  # no CTC frames, so no spikes: its output only
                for col, ids in enumerate(model.generate(batch.sources, batch.source_lengths)):
                    fit_title(axes[r][col], f"{name}: {task.tokenizer.decode(ids)!r}")
                    axes[r][col].axis("off")
                continue
            log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
            for col, hyp in enumerate(greedy_decode(log_probs, frame_lengths)):
                title = f"{name}: {task.tokenizer.decode(hyp.ids)!r}"
                task.plot_spikes(axes[r][col], examples[col], title, hyp.ids, hyp.frames, int(frame_lengths[col]))
    return fig


def fit_title(ax, text: str, fontsize: float = TITLE_POINTS):
    """`text` as the axes' left-aligned title, cut with an ellipsis where it would be wider
    than the axes (a long title would run over the next panel's)."""
    title = ax.set_title(text, fontsize=fontsize, loc="left")
    renderer = ax.figure.canvas.get_renderer()
    limit = ax.get_window_extent(renderer).width
    while len(text) > 1 and title.get_window_extent(renderer).width > limit:
        text = text[:-1]
        title.set_text(text.rstrip() + "\u2026")
    return title


def spike_labels(ax, xs, texts: list[str], top: float = 0.97, **style) -> list:
    """Labels centred on data x positions `xs`, hung from `top` (a fraction of the axes'
    height) in rows: each goes in the first row where it starts right of the row's last
    label, so no two overlap (measured in pixels at the figure's size)."""
    renderer = ax.figure.canvas.get_renderer()
    probe = ax.text(0, 0, "Ág|", transform=ax.transAxes, **style)  # the tallest a line of this style gets
    row_height = 1.1 * probe.get_window_extent(renderer).height / ax.get_window_extent(renderer).height
    probe.remove()
    ends: list[float] = []  # each row's right edge so far, in pixels
    labels = []
    for x, text in sorted(zip(xs, texts), key=lambda pair: pair[0]):
        label = ax.text(x, top, text, transform=ax.get_xaxis_transform(), ha="center", va="top", **style)
        box = label.get_window_extent(renderer)
        row = next((r for r, end in enumerate(ends) if box.x0 > end + 2), len(ends))
        if row == len(ends):
            ends.append(box.x1)
        else:
            ends[row] = box.x1
        label.set_y(top - row * row_height)
        labels.append(label)
    return labels
