"""report.md and its plots, rendered from results.json (the numbers are the same)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from oracle_kd.checkpoint import load_model  # noqa: E402
from oracle_kd.decoding import greedy_decode  # noqa: E402
from oracle_kd.io import atomic_write_text  # noqa: E402


def fmt(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summary_table(results: dict) -> str:
    """Markdown table of the student arms: the figure the experiment exists for."""
    metric = results["metric"]
    names = list(next(iter(results["students"].values()))["test"])
    head = "| arm | params | KD (tau, weight) | " + " | ".join(f"test {m} (mean ± std)" for m in names) + " | alignment acc. |"
    lines = [head, "|" + " --- |" * (4 + len(names))]
    for arm, s in results["students"].items():
        kd = "-" if not s["kd"] else f"{s['kd']['method']} ({s['kd']['tau']:g}, {s['kd']['weight']:g})"
        cells = [f"{s['test'][m]['mean']:.4f} ± {s['test'][m]['std']:.4f}" for m in names]
        lines.append(f"| {arm} | {s['params']:,} | {kd} | " + " | ".join(cells) + f" | {fmt(s['alignment_accuracy'])} |")
    n = len(results["seeds"])
    lines.append(f"\n({n} seed{'s' if n != 1 else ''}; primary metric: {metric})")
    return "\n".join(lines)


def kd_lines(results: dict) -> str:
    """How each KD arm's (tau, weight) was chosen: validation scores of the grid, seed 0."""
    trials = max((len(c["grid"]) for c in results.get("kd", {}).values()), default=1)
    lines = []
    if trials > 1:
        lines.append(f"- student_ctc: plain CTC, no KD setting to choose: one run per seed (each KD arm had {trials} "
                     "validation trials at seed 0, every trial with the same model, data and epoch budget)")
    for arm, choice in results.get("kd", {}).items():
        c = choice["chosen"]
        line = f"- {arm}: {c['method']} KD, tau {c['tau']:g}, weight {c['weight']:g}"
        if "validation" in choice:
            tried = ", ".join(f"(tau {g['tau']:g}, weight {g['weight']:g}): {v:.4f}"
                              for g, v in zip(choice["grid"], choice["validation"]))
            line += f", chosen on validation {results['metric']} (seed 0) among {tried}"
        else:
            line += " (a single setting: nothing to choose)"
        lines.append(line)
    return "\n".join(lines)


def teacher_table(results: dict) -> str:
    metric = results["metric"]
    lines = [f"| teacher | params | epochs to best | seconds to best | test {metric} | test cer | alignment acc. | "
             "copy test: matched / mismatched loss | mismatched decoded as target |",
             "|" + " --- |" * 9]
    rows = {**results["teachers"], **{f"oracle + {k} (ablation)": v for k, v in results.get("ablations", {}).items()}}
    for name, t in rows.items():
        c = t.get("copy_test")
        copy = "-" if not c else f"{c['matched_loss']:.3f} / {c['mismatched_loss']:.3f}"
        decoded = "-" if not c else fmt(c["mismatched_decoded_as_target"], 3)
        epochs, seconds = (t["epochs"], f"{t['train_seconds']:.0f}") if t.get("converged", True) else ("-", "did not converge")
        lines.append(f"| {name} | {t['params']:,} | {epochs} | {seconds} | "
                     f"{fmt(t['test'].get(metric))} | {fmt(t['test'].get('cer'))} | {fmt(t['alignment_accuracy'])} | "
                     f"{copy} | {decoded} |")
    return "\n".join(lines)


def posterior_lines(teachers: dict) -> str:
    """The teachers' frame posteriors on the training set, as the students receive them."""
    lines = []
    for name, t in teachers.items():
        p = t.get("posteriors")
        if p and p["frames"]:
            lines.append(f"- {name}: blank is the top label on {p['blank_fraction']:.1%} of {p['frames']:,} training "
                         f"frames; mean top probability {p['mean_top_probability']:.3f}, mean entropy "
                         f"{p['mean_entropy']:.3f} nats (temperature 1)")
    return "Teacher posteriors on the training set (what the KD students are taught):\n" + "\n".join(lines) if lines else ""


def time_to_best(teachers: dict) -> str:
    oracle, conv = teachers["oracle"], teachers["conventional"]
    stuck = [name for name, t in (("Oracle", oracle), ("conventional", conv)) if not t.get("converged", True)]
    if stuck:
        who = "Neither teacher left" if len(stuck) == 2 else f"The {stuck[0]} teacher never left"
        return f"{who} the CTC blank plateau (best validation CER 1), so there is no time to best to compare."
    o, c = oracle["train_seconds"], conv["train_seconds"]
    text = (f"The Oracle Teacher reached its best validation score in {o:.0f} s, "
            f"{o / max(c, 1e-9):.2f}x the conventional teacher's {c:.0f} s.")
    mo, mc = oracle.get("median_epoch_seconds"), conv.get("median_epoch_seconds")
    if mo and mc:  # a paused, resumed or shared epoch inflates the wall time, hardly the median epoch
        eo, ec = oracle["epochs"], conv["epochs"]
        text += (f" Counted as epochs to best x median epoch time, {eo} x {mo:.0f} s against "
                 f"{ec} x {mc:.0f} s: {eo * mo / max(ec * mc, 1e-9):.2f}x.")
    co, cc = oracle.get("cpu_seconds_to_best"), conv.get("cpu_seconds_to_best")
    if co and cc:  # CPU time of the training process: a shared or suspended machine hardly moves it
        text += f" In CPU time to best, {co:.0f} s against {cc:.0f} s: {co / cc:.2f}x."
    return text


def write_report(task, results: dict, runner, out: Path) -> Path:
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(runner.histories, results["metric"], plots / "learning_curves.png")
    spikes = plot_spikes(task, runner.checkpoints, runner.splits["test"],
                         runner.cfg["diagnostics"]["spike_examples"], plots / "spikes.png")
    changed = ", ".join(f"`{o}`" for o in results.get("overrides", []))
    text = f"""# oracle-kd experiment: {results['task']} ({results['preset']}{', ' + changed if changed else ''})

Data: {results['data']['train']} train / {results['data']['val']} validation / {results['data']['test']} test examples
({results['data']['skipped']} skipped). Environment: torch {results['environment']['torch']},
{results['environment']['threads']} CPU threads. This process: {results['wall_seconds']:.0f} s (a resumed or shared
run counts only its own part; each model's own times are below).

## Students (test split)
{summary_table(results)}

{kd_lines(results)}

## Teachers
{teacher_table(results)}

{time_to_best(results["teachers"])} The Oracle Teacher's test figures are
computed with the reference labels as input (it is an oracle), so they measure
alignment, not recognition.

{posterior_lines(results["teachers"])}

## Learning curves
![learning curves]({curves.relative_to(out)})

## Frame spikes on test examples
Each panel: the input with the label each model emits at its spike frames.

![spikes]({spikes.relative_to(out)})
"""
    path = out / "report.md"
    atomic_write_text(path, text)
    return path


def plot_curves(histories: dict[str, list], metric: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # one colour per model or arm, one line style per seed ("student_ctc seed 1")
    groups = list(dict.fromkeys(name.partition(" seed ")[0] for name in histories))
    styles = ["-", "--", ":", "-."]
    for name, history in histories.items():
        if not history:
            continue
        group, _, seed = name.partition(" seed ")
        look = dict(color=plt.cm.tab10(groups.index(group) % 10), linestyle=styles[int(seed or 0) % len(styles)],
                    marker="o", ms=3, label=name)
        axes[0].plot([h["epoch"] for h in history], [h[f"val_{metric}"] for h in history], **look)
        axes[1].plot([h["seconds"] for h in history], [h[f"val_{metric}"] for h in history], **look)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("wall seconds")
    for ax in axes:
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.inference_mode()
def plot_spikes(task, checkpoints: dict[str, str], dataset, n: int, path: Path) -> Path:
    examples = [dataset[i] for i in range(min(n, len(dataset)))]
    batch = task.collate(examples)
    names = list(checkpoints)
    fig, axes = plt.subplots(len(names), len(examples), figsize=(3.2 * len(examples), 1.1 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        _, model, _ = load_model(checkpoints[name])
        log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
        for col, hyp in enumerate(greedy_decode(log_probs, frame_lengths)):
            title = f"{name}: {task.vocab.decode(hyp.ids)!r}"
            task.plot_spikes(axes[row][col], examples[col], title, hyp.ids, hyp.frames, int(frame_lengths[col]))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
