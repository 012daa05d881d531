"""report.md and its plots, rendered from results.json (the numbers are the same),
for any number of teachers and student arms; and the README's result tables.

    python -m oracle_kd.report results/scene-text-full/results.json   # prints the README tables

Only the frame-spike plot needs more than results.json: the test split and the
checkpoints (those not found are left out of it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from oracle_kd.config import PAPER_ARMS  # PAPER.md's comparison: listed first
from oracle_kd.io import atomic_write_text

NO_TEMPERATURE = {"guided", "alignment", "sequence"}  # KD methods whose loss has no temperature: tau is not shown
ON_100_SCALE = {"bleu", "chrf"}  # already in points; fractions (accuracy, error rates) are shown x 100 as points


def write_report(task, results: dict, out: str | Path, test_set=None, spike_examples: int = 4) -> Path:
    """OUT/report.md with plots in OUT/plots. The spike plot is drawn when `task` and
    `test_set` (the test split's dataset) are given, from every teacher's and every arm's
    first-seed checkpoint that can be found (as recorded, or by its path's tail under OUT);
    without them an existing OUT/plots/spikes.png is kept and shown."""
    from oracle_kd.plots import model_checkpoints, plot_curves, plot_spikes

    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(results, plots / "learning_curves.png")
    found, missing = model_checkpoints(results, out)
    spikes = None
    if task is not None and test_set is not None and found and spike_examples > 0:
        spikes = plot_spikes(task, found, test_set, spike_examples, plots / "spikes.png")
    elif (plots / "spikes.png").exists():  # re-rendered from results.json alone (python -m oracle_kd.report --write)
        spikes, missing = plots / "spikes.png", []
    path = out / "report.md"
    atomic_write_text(path, report_markdown(results, out, curves, spikes, missing))
    return path


def report_markdown(results: dict, out: Path, curves: Path | None, spikes: Path | None, missing: list[str]) -> str:
    data, env = results.get("data", {}), results.get("environment", {})
    changed = ", ".join(f"`{o}`" for o in results.get("overrides") or [])
    oracles = any(model_of(name, t) == "oracle" for name, t in results["teachers"].items())
    sections = [
        f"# oracle-kd experiment: {results['task']} ({results['preset']}{', ' + changed if changed else ''})",
        f"Data: {data.get('train')} train / {data.get('val')} validation / {data.get('test')} test examples "
        f"({data.get('skipped', 0)} skipped). Environment: torch {env.get('torch', '?')}, {env.get('threads', '?')} "
        f"CPU threads. This process: {results.get('wall_seconds', 0):.0f} s (a resumed or shared run counts only "
        "its own part; each model's own times are below).",
        "## Students (test split)", summary_table(results),
        "## Tuning (validation split)", tuning_lines(results),
        "## Teachers", teacher_table(results),
        time_to_best(results["teachers"]),
        "The Oracle teachers' test figures are computed with the reference labels as input (an oracle), so they "
        "measure alignment, not recognition." if oracles else "",
        posterior_lines(results["teachers"]),
        "## Paired bootstrap (test split)", bootstrap_tables(results) or "Not computed for this run.",
        "## Learning curves", curves_table(results),
        f"![learning curves]({curves.relative_to(out)})" if curves else "No training history recorded.",
        "## Frame spikes on test examples",
    ]
    if spikes:
        sections += ["Each panel: the input with the label each model emits at its spike frames.",
                     f"![spikes]({spikes.relative_to(out)})"]
    else:
        sections.append("Not drawn (it needs the test split and the checkpoints).")
    if missing:
        sections.append("Checkpoints not found, left out: " + ", ".join(missing) + ".")
    return "\n\n".join(s for s in sections if s) + "\n"


# ---- students ---------------------------------------------------------------------------------------------------

def summary_table(results: dict) -> str:
    """Markdown table of the student arms: the figure the experiment exists for."""
    students = results["students"]
    names = student_metrics(results)
    train = any(s.get("train") for s in students.values())
    head = ["arm", "params", "KD (chosen)"] + (["training (chosen)"] if train else []) + \
        [f"test {m} (mean ± std)" for m in names] + ["alignment acc."]
    lines = [row(head), "|" + " --- |" * len(head)]
    for arm in arm_order(students):
        s = students[arm]
        cells = [arm, f"{s['params']:,}", arm_kd_text(s)] + ([point_text(s.get("train"), "-")] if train else [])
        cells += [mean_std(s["test"].get(m)) for m in names] + [fmt(s.get("alignment_accuracy"))]
        lines.append(row(cells))
    n = len(results["seeds"])
    lines.append(f"\n({n} seed{'s' if n != 1 else ''}; primary metric: {results['metric']})")
    if results.get("best"):  # the best arm of each teacher family, chosen on validation
        lines.append("Best arm of each teacher family by validation (seed 0): "
                     + "; ".join(f"{family} {arm}" for family, arm in results["best"].items()))
    return "\n".join(lines)


def kd_terms(student: dict) -> list[dict]:
    """The chosen KD terms of an arm ([] for plain CTC; an older results.json held one dict or None)."""
    kd = student.get("kd")
    return [] if not kd else [kd] if isinstance(kd, dict) else list(kd)


def arm_kd_text(arm: dict) -> str:
    """What an arm learns from: its KD terms, after the teacher whose outputs are its targets
    (sequence-level KD) if any."""
    kd = kd_text(kd_terms(arm))
    if arm.get("targets"):
        kd = f"targets of {arm['targets']}" + ("" if kd == "-" else f" + {kd}")
    return kd


def kd_text(terms: list[dict]) -> str:
    """`frame(conventional, tau 1, w 1) + alignment(oracle, w 1)`; `-` for plain CTC."""
    shown = []
    for term in terms:
        parts = [str(term["teacher"])] if term.get("teacher") else []
        if "tau" in term and term["method"] not in NO_TEMPERATURE:
            parts.append(f"tau {value_text(term['tau'])}")
        if "weight" in term:
            parts.append(f"w {value_text(term['weight'])}")
        parts += [f"{k} {value_text(v)}" for k, v in term.items() if k not in ("method", "teacher", "tau", "weight")]
        shown.append(f"{term['method']}({', '.join(parts)})")
    return " + ".join(shown) or "-"


def tuning_lines(results: dict) -> str:
    """Each arm's grid with its validation scores and the chosen point, and whether every
    arm had the same number of tries (a bigger grid is a bigger budget)."""
    students, metric = results["students"], results["metric"]
    sizes = {arm: max(1, len((students[arm].get("tuning") or {}).get("grid") or [])) for arm in arm_order(students)}
    if len(set(sizes.values())) == 1:
        n = next(iter(sizes.values()))
        lines = [f"Every arm had a grid of the same size: {n} point{'s' if n != 1 else ''}, "
                 f"chosen on validation {metric}."]
    else:
        lines = ["**Unequal tuning budgets**: the grids differ in size ("
                 + ", ".join(f"{arm} {n}" for arm, n in sizes.items())
                 + "); an arm with more points had more chances on the validation split."]
    for arm in sizes:
        tuning = students[arm].get("tuning") or {}
        grid, chosen = tuning.get("grid") or [], tuning.get("chosen")
        if len(grid) <= 1:
            only = chosen if chosen is not None else grid[0] if grid else None
            lines.append(f"- {arm}: a single setting ({point_text(only)}): nothing to choose")
            continue
        scores = tuning.get("validation") or [None] * len(grid)
        tried = "; ".join((f"**{point_text(g)}**" if g == chosen else point_text(g)) + f": {fmt(v)}"
                          for g, v in zip(grid, scores))
        lines.append(f"- {arm}: {point_text(chosen)} chosen among {tried}")
    return "\n".join(lines)


def bootstrap_tables(results: dict, key_pairs_only: bool = False) -> str:
    """The primary metric's paired bootstrap, then any other metric's the run computed (chrF)."""
    tables = [bootstrap_table(results, key_pairs_only)]
    for metric, found in (results.get("paired_bootstrap_other_metrics") or {}).items():
        table = bootstrap_table(results, key_pairs_only, found)
        tables.append(f"The same for {label(metric)}:\n\n{table}" if table else "")
    return "\n\n".join(t for t in tables if t)


def bootstrap_table(results: dict, key_pairs_only: bool = False, found: dict | None = None) -> str:
    """Paired bootstrap between arms over test examples: differences in points of the metric.
    `key_pairs_only`: the pairs the comparison is judged by (PAPER.md's arms, and the best
    arm of each teacher family chosen on validation, against plain CTC and each other).
    `found`: one metric's bootstrap (default the primary metric's)."""
    found = dict((results.get("paired_bootstrap") if found is None else found) or {})
    if key_pairs_only and found.get("pairs"):
        best = results.get("best") or {}
        firsts = {"student_kd_oracle", best.get("oracle")}
        seconds = {"student_ctc", "student_kd_conventional", best.get("conventional")}
        found["pairs"] = {k: v for k, v in found["pairs"].items()
                          if k.split(" - ")[0] in firsts and k.split(" - ")[1] in seconds
                          or k == f"{best.get('conventional')} - student_ctc"}
    if not found.get("pairs"):
        return ""
    metric = found.get("metric", results["metric"])
    scale = 1 if metric in ON_100_SCALE else 100
    better = "higher" if higher(metric, results) else "lower"
    lines = [f"Over the {found.get('test_examples', 0):,} test examples, {found.get('resamples', 0):,} resamples; an "
             f"arm's score is the mean of its seeds' corpus scores. Difference: first minus second, in points of "
             f"{metric} ({better} is better).", "",
             "| pair | difference | 95 % interval | first not better in |", "| --- | --- | --- | --- |"]
    for pair, p in found["pairs"].items():
        low, high = p["interval_95"]
        lines.append(f"| {pair} | {p['difference'] * scale:+.2f} | {low * scale:+.2f} to {high * scale:+.2f} | "
                     f"{p['share_first_not_better']:.1%} of resamples |")
    return "\n".join(lines)


def curves_table(results: dict) -> str:
    """Epochs each arm needs to reach plain CTC's final validation score (results' "curves")."""
    curves = results.get("curves")
    if not curves or not curves.get("epochs_to_target"):
        return ""
    lines = [f"Epochs each arm needs to reach validation {results['metric']} {curves['target']:.4f}, the final "
             f"validation score of {curves['target_from']} (never: not within the epoch budget):", "", "| arm | epochs to target, per seed | median |", "| --- | --- | --- |"]
    for arm, e in curves["epochs_to_target"].items():
        runs = " / ".join("never" if r is None else str(r) for r in e["runs"])
        lines.append(f"| {arm} | {runs} | {'never' if e['median'] is None else value_text(e['median'])} |")
    return "\n".join(lines)


# ---- teachers ---------------------------------------------------------------------------------------------------

def teacher_table(results: dict) -> str:
    metric, teachers = results["metric"], results["teachers"]
    names = teacher_metrics(teachers, metric)
    head = ["teacher", "model (set)", "params", "epochs to best", "seconds to best", f"best validation {metric}"] + \
        [f"test {m}" for m in names] + ["alignment acc.", "copy test: matched / mismatched loss",
                                        "mismatched decoded as target"]
    lines = [row(head), "|" + " --- |" * len(head)]
    for name, t in teachers.items():
        converged = t.get("converged", True)
        epochs, seconds = (t["epochs"], f"{t['train_seconds']:.0f}") if converged else ("-", "did not converge")
        lines.append(row([name, model_text(name, t), f"{t['params']:,}", epochs, seconds,
                          fmt((t.get("validation") or {}).get(metric))]
                         + [fmt(t["test"].get(m)) for m in names]
                         + [fmt(t.get("alignment_accuracy"))] + copy_cells(t)))
    return "\n".join(lines)


def time_to_best(teachers: dict) -> str:
    """Each Oracle-family teacher's time to its best validation score against the
    conventional teacher's: wall time, epochs x median epoch time, CPU time."""
    conv = reference_teacher(teachers)
    if conv is None:
        return ""
    found = [oracle_time(name, t, teachers[conv]) for name, t in teachers.items() if model_of(name, t) == "oracle"]
    found = list(dict.fromkeys(found))  # a conventional teacher on the plateau is said once, not per Oracle
    return found[0] if len(found) == 1 else "\n".join(f"- {text}" for text in found)


def oracle_time(name: str, oracle: dict, conv: dict) -> str:
    title = "the Oracle Teacher" if name == "oracle" else f"the Oracle teacher {name}"
    stuck = [who for who, t in ((title, oracle), ("the conventional teacher", conv)) if not t.get("converged", True)]
    if stuck:
        who = f"Neither {title} nor the conventional teacher left" if len(stuck) == 2 else f"{cap(stuck[0])} never left"
        return (f"{who} the CTC blank plateau (the best validation epoch scored what an all-blank output scores), "
                "so there is no time to best to compare.")
    o, c = oracle["train_seconds"], conv["train_seconds"]
    text = (f"{cap(title)} reached its best validation score in {o:.0f} s, "
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


def posterior_lines(teachers: dict) -> str:
    """The teachers' frame posteriors on the training set, as the students receive them."""
    lines = []
    for name, t in teachers.items():
        p = t.get("posteriors")
        if p and p["frames"]:
            lines.append(f"- {name}: blank is the top label on {p['blank_fraction']:.1%} of {p['frames']:,} training "
                         f"frames; mean top probability {p['mean_top_probability']:.3f}, mean entropy "
                         f"{p['mean_entropy']:.3f} nats (temperature 1)")
    if not lines:
        return ""
    return "Teacher posteriors on the training set (what the KD students are taught):\n" + "\n".join(lines)


def reference_teacher(teachers: dict) -> str | None:
    """The conventional teacher the Oracle ones are timed against."""
    if "conventional" in teachers:
        return "conventional"
    return next((name for name, t in teachers.items() if model_of(name, t) == "conventional"), None)


def model_of(name: str, teacher: dict) -> str:
    return teacher.get("model", name)  # an older results.json named each teacher by its model


def model_text(name: str, teacher: dict) -> str:
    changed = teacher.get("set") or {}
    return model_of(name, teacher) + (f" ({point_text(changed)})" if changed else "")


# ---- README tables ----------------------------------------------------------------------------------------------

def render_readme_tables(results: dict) -> str:
    """The README's tables of one results.json: student arms (best mean in bold), teachers,
    and the paired bootstrap when there is one."""
    tables = (readme_students(results), readme_teachers(results), bootstrap_tables(results, key_pairs_only=True))
    return "\n\n".join(t for t in tables if t) + "\n"


def readme_students(results: dict) -> str:
    students, names = results["students"], student_metrics(results)
    order = arm_order(students)
    train = any(s.get("train") for s in students.values())
    head = ["arm", "KD"] + (["training"] if train else []) + [f"test {label(m)}" for m in names] + \
        ["alignment accuracy"]
    best = {m: best_of([students[a]["test"][m]["mean"] for a in order if m in students[a]["test"]],
                       higher(m, results)) for m in names}
    best["alignment"] = best_of([students[a].get("alignment_accuracy") for a in order], True, digits=3)
    lines = [row(head), "|" + " --- |" * len(head)]
    for arm in order:
        s = students[arm]
        cells = [arm, arm_kd_text(s)] + ([point_text(s.get("train"), "-")] if train else [])
        for m in names:
            spread = s["test"].get(m)
            cells.append(bold(mean_std(spread), spread is not None and round(spread["mean"], 4) == best[m]))
        accuracy = s.get("alignment_accuracy")
        cells.append(bold(fmt(accuracy, 3), accuracy is not None and round(accuracy, 3) == best["alignment"]))
        lines.append(row(cells))
    n = len(results["seeds"])
    lines.append(f"\n(test figures: mean ± standard deviation over {n} seed{'s' if n != 1 else ''})")
    return "\n".join(lines)


def readme_teachers(results: dict) -> str:
    metric, teachers = results["metric"], results["teachers"]
    names = teacher_metrics(teachers, metric)
    head = ["teacher", "params", f"best validation {label(metric)} (epoch; seconds)"] + \
        [f"test {label(m)}" for m in names] + ["alignment acc.", "copy test: matched / mismatched loss",
                                              "mismatched decoded as target"]
    lines = [row(head), "|" + " --- |" * len(head)]
    for name, t in teachers.items():
        val = (t.get("validation") or {}).get(metric)
        best = (f"{fmt(val, 3)} ({t['epochs']}; {t['train_seconds']:,.0f} s)" if t.get("converged", True)
                else f"{fmt(val, 3)} (did not converge)")
        tests = [fmt(t["test"].get(m)) for m in names]
        if model_of(name, t) == "oracle" and tests:
            tests[0] += " (reads the labels)"
        shown = model_text(name, t) if name == model_of(name, t) else f"{name}: {model_text(name, t)}"
        lines.append(row([shown, f"{t['params'] / 1e6:.2f}M", best] + tests
                         + [fmt(t.get("alignment_accuracy"), 3)] + copy_cells(t)))
    return "\n".join(lines)


def report(path: str | Path, out=None) -> str:
    """Print to `out` (default stdout) and return the README tables of a results.json (or of
    the folder holding one)."""
    path = Path(path)
    results = json.loads((path / "results.json" if path.is_dir() else path).read_text())
    text = render_readme_tables(results)
    print(text, end="", file=out or sys.stdout)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oracle_kd.report",
                                     description="Print the README tables of an experiment's results.json.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser) -> None:
    parser.add_argument("results", nargs="+", help="results.json files (or the folders holding them)")
    parser.add_argument("--write", action="store_true",
                        help="also write report.md and the learning curves beside each results.json "
                             "(no spike plot: it needs the checkpoints and the test split)")
    parser.add_argument("--readme", default=None, metavar="FILE",
                        help="replace each experiment's tables in FILE, between <!-- results:NAME:start --> and "
                             "<!-- results:NAME:end --> (NAME: the folder holding its results.json)")


def run(args) -> int:
    out = getattr(args, "stdout", sys.stdout)  # the command line's stdout (the rest goes to stderr)
    for i, given in enumerate(args.results):
        path = Path(given) / "results.json" if Path(given).is_dir() else Path(given)
        if len(args.results) > 1:  # several experiments: a heading before each one's tables
            print(("\n" if i else "") + f"### {path}\n", file=out)
        text = report(path, out)
        if args.write:
            write_report(None, json.loads(path.read_text()), path.parent)
        if args.readme:
            replace_section(Path(args.readme), path.parent.name, text)
    return 0


def replace_section(readme: Path, name: str, text: str) -> None:
    """Put `text` between the README's markers for `name` (which must be there already)."""
    from oracle_kd.io import InputError

    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    doc = readme.read_text()
    if start not in doc or end not in doc:
        raise InputError(f"{readme}: no {start} ... {end} markers to put the {name} tables between")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(readme, f"{head}{start}\n{text.strip()}\n{end}{tail}")


# ---- small helpers ----------------------------------------------------------------------------------------------

def arm_order(students: dict) -> list[str]:
    """PAPER.md's three arms first, then the others in results order."""
    return [a for a in PAPER_ARMS if a in students] + [a for a in students if a not in PAPER_ARMS]


def student_metrics(results: dict) -> list[str]:
    """Test metrics of the student arms, the primary one first."""
    seen = [m for s in results["students"].values() for m in s["test"] if m != "n"]
    return list(dict.fromkeys([results["metric"]] * (results["metric"] in seen) + seen))


def teacher_metrics(teachers: dict, metric: str) -> list[str]:
    seen = [m for t in teachers.values() for m in (t.get("test") or {}) if m != "n"]
    return list(dict.fromkeys([metric] * (metric in seen) + seen))


def higher(metric: str, results: dict) -> bool:
    """The direction of `metric` as the task's metric spec gives it in results.json."""
    if metric == results["metric"]:
        return results.get("higher_is_better", True)
    return (results.get("metrics") or {}).get(metric, {}).get("higher_is_better", False)


def best_of(values: list, higher_is_better: bool, digits: int = 4) -> float | None:
    """The best value as shown (rounded), so that ties on the page are all in bold."""
    values = [round(v, digits) for v in values if v is not None]
    return (max(values) if higher_is_better else min(values)) if values else None


def label(metric: str) -> str:
    """A metric's name as a reader writes it: acronyms in capitals, words with spaces."""
    return metric.upper() if len(metric) <= 4 and "_" not in metric else metric.replace("_", " ")


def fmt(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def mean_std(spread: dict | None) -> str:
    return "-" if not spread else f"{spread['mean']:.4f} ± {spread['std']:.4f}"


def bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def copy_cells(teacher: dict) -> list[str]:
    """The copy test's two cells: matched / mismatched loss, and mismatched pairs decoded as the target."""
    c = teacher.get("copy_test")
    if not c:
        return ["-", "-"]
    pairs = f" ({c['pairs']:,} pairs)" if c.get("pairs") else ""
    return [f"{loss_text(c['matched_loss'])} / {loss_text(c['mismatched_loss'])}",
            fmt(c["mismatched_decoded_as_target"], 3) + pairs]


def loss_text(nats: float) -> str:
    """0.043, 9.302; a copying teacher's tiny losses keep two significant digits (0.0013)."""
    return f"{nats:.3f}" if abs(nats) >= 0.01 else f"{nats:.2g}"


def value_text(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return f"{v:g}"
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def point_text(point: dict | None, empty: str = "defaults") -> str:
    """A grid point or a set of overrides, any keys: `tau 1, weight 1`."""
    if not point:
        return empty
    return ", ".join(f"{k} {value_text(v)}" for k, v in point.items())


if __name__ == "__main__":
    raise SystemExit(main())
