"""report.md, the README tables and the report's reading of teacher runs, from a hand-made
results.json with more teachers and arms than PAPER.md's three (the CTC blank plateau, and wall
time that a pause inflated, are read as before)."""

import copy
import json

import pytest

from oracle_kd.plots import locate_checkpoint
from oracle_kd.report import (bootstrap_table, curves_table, kd_text, main, readme_students, render_readme_tables,
                              summary_table, teacher_table, time_to_best, tuning_lines, write_report)


def teacher(seconds, cer, **extra):
    # converged as the runner decides it: the best epoch scored better than an all-blank output (CER 1)
    return {"params": 10, "epochs": 1, "train_seconds": seconds, "test": {"wer": cer, "cer": cer},
            "alignment_accuracy": None, "converged": cer < 0.999, **extra}


def test_median_epoch_ignores_a_pause_and_cpu_time_is_read_at_the_best_epoch():
    from oracle_kd.experiment import cpu_seconds_at, median_epoch_seconds

    steady = [{"epoch": e, "seconds": 100.0 * e} for e in range(1, 7)]
    paused = [{"epoch": e, "seconds": 100.0 * e + (1500.0 if e >= 3 else 0.0)} for e in range(1, 7)]
    assert median_epoch_seconds(steady) == median_epoch_seconds(paused) == 100.0
    assert median_epoch_seconds([]) is None
    history = [{"epoch": 1, "seconds": 9.0, "cpu_seconds": 5.0}, {"epoch": 2, "seconds": 99.0, "cpu_seconds": 10.0}]
    assert cpu_seconds_at(history, 2) == 10.0 and cpu_seconds_at([{"epoch": 1, "seconds": 9.0}], 1) is None


def test_time_ratio_only_between_converged_teachers():
    ok = {"oracle": teacher(50, 0.2), "conventional": teacher(200, 0.3)}
    assert "0.25x" in time_to_best(ok)
    stuck = {"oracle": teacher(50, 0.2), "conventional": teacher(263, 1.0)}
    text = time_to_best(stuck)
    assert "conventional teacher never left" in text and "x the" not in text
    assert "Neither" in time_to_best({"oracle": teacher(5, 1.0), "conventional": teacher(9, 1.0)})
    table = teacher_table({"metric": "wer", "teachers": stuck})
    row = [line for line in table.splitlines() if line.startswith("| conventional")][0]
    assert "did not converge" in row and "263" not in row


def test_paused_epoch_inflates_wall_time_not_the_median_epoch_ratio():
    # 6 epochs of 100 s with a 1,500 s pause in epoch 3: wall time 2,100 s, median epoch 100 s
    oracle = teacher(60, 0.2, epochs=3, median_epoch_seconds=20.0)
    conv = teacher(2100.0, 0.3, epochs=6, median_epoch_seconds=100.0)
    text = time_to_best({"oracle": oracle, "conventional": conv})
    assert "0.03x the conventional" in text  # raw wall time: 60 / 2100
    assert "3 x 20 s against 6 x 100 s: 0.10x" in text  # 60 / 600, the pause left out


def test_cpu_time_to_best_is_reported_when_both_teachers_counted_it():
    oracle = teacher(60, 0.2, cpu_seconds_to_best=10.0)
    conv = teacher(100, 0.3, cpu_seconds_to_best=40.0)
    assert "In CPU time to best, 10 s against 40 s: 0.25x." in time_to_best({"oracle": oracle, "conventional": conv})
    old = teacher(100, 0.3)  # a run of an older version, without CPU time
    assert "CPU time" not in time_to_best({"oracle": oracle, "conventional": old})


# ---- a results.json in the shape of arms and teachers as config --------------------------------------------------

def history(scores, seconds=10.0):
    return [{"epoch": e + 1, "seconds": seconds * (e + 1), "cpu_seconds": 9.0 * (e + 1), "train_loss": 3.0 / (e + 1),
             "val_word_accuracy": v, "val_cer": 1 - v} for e, v in enumerate(scores)]


def full_teacher(model, params, seconds, epochs, val, test, align, **extra):
    return {"model": model, "set": {}, "checkpoint": f"/elsewhere/run/teachers/{model}/best.safetensors",
            "params": params, "train_seconds": seconds, "total_seconds": seconds, "epochs": epochs,
            "validation": {"word_accuracy": val, "cer": 0.02}, "test": {"word_accuracy": test, "cer": 0.02, "n": 5000},
            "alignment_accuracy": align, "converged": True, "median_epoch_seconds": seconds / epochs,
            "cpu_seconds_to_best": seconds * 0.9, "history": history([0.5, val]), **extra}


def arm(name, kd, accuracy_runs, std, align, tuning, train=None):
    mean = sum(accuracy_runs) / len(accuracy_runs)
    runs = [{"seed": s, "checkpoint": f"/elsewhere/run/students/{name}/seed{s}/best.safetensors",
             "test": {"word_accuracy": a, "cer": 0.025, "n": 5000}, "validation": {"word_accuracy": a + 0.02},
             "epochs": 2, "train_seconds": 100.0, "alignment_accuracy": align, "params": 860000,
             "history": history([a - 0.1, a + 0.02])} for s, a in enumerate(accuracy_runs)]
    return {"params": 860000, "teachers": sorted({t["teacher"] for t in kd}), "kd": kd, "train": train or {},
            "tuning": tuning, "test": {"word_accuracy": {"mean": mean, "std": std, "runs": accuracy_runs},
                                       "cer": {"mean": 0.025, "std": 0.001, "runs": [0.025] * 3}},
            "checkpoints": [r["checkpoint"] for r in runs], "alignment_accuracy": align, "runs": runs}


FRAME = {"method": "frame", "teacher": "conventional", "tau": 1.0, "weight": 1.0}
GRID = [{"tau": 1.0}, {"tau": 2.0}]
RESULTS = {
    "task": "scene-text", "preset": "screen", "overrides": [], "seeds": [0, 1, 2],
    "metric": "word_accuracy", "higher_is_better": True,
    "environment": {"torch": "2.x", "threads": 1, "device": "cpu"},
    "data": {"train": 15000, "val": 2000, "test": 5000, "skipped": 0, "path": "/cache/scene-text"},
    "teachers": {
        "conventional": full_teacher("conventional", 4030000, 6671.0, 12, 0.938, 0.918, 0.861),
        "oracle": full_teacher("oracle", 750000, 1758.0, 10, 0.947, 0.951, 0.979,
                               copy_test={"matched_loss": 0.043, "mismatched_loss": 9.302,
                                          "mismatched_decoded_as_target": 0.001, "pairs": 1024},
                               posteriors={"frames": 780000, "blank_fraction": 0.72, "mean_top_probability": 0.988,
                                           "mean_entropy": 0.05, "store_bytes": 123}),
        "oracle_positions": {**full_teacher("oracle", 750000, 2333.0, 12, 0.990, 0.997, 0.239,
                                            copy_test={"matched_loss": 0.0013, "mismatched_loss": 0.0013,
                                                       "mismatched_decoded_as_target": 0.998, "pairs": 1024}),
                             "set": {"target_positions": True}},
    },
    "students": {  # the extra arm first: the report still lists PAPER.md's three arms first
        "student_kd_oracle_align": arm("student_kd_oracle_align",
                                       [FRAME, {"method": "alignment", "teacher": "oracle", "tau": 1.0,
                                                "weight": 1.0}],
                                       [0.90, 0.89, 0.91], 0.01, 0.97,
                                       {"grid": GRID, "validation": [0.91, 0.92], "chosen": {"tau": 2.0}},
                                       train={"lr": 0.002}),
        "student_ctc": arm("student_ctc", [], [0.8823, 0.8893, 0.8870], 0.0036, 0.761,
                           {"grid": [{}, {"lr": 0.001}], "validation": [0.90, 0.89], "chosen": {}}),
        "student_kd_conventional": arm("student_kd_conventional", [FRAME], [0.8937, 0.8923, 0.8957], 0.0017, 0.856,
                                       {"grid": GRID, "validation": [0.9155, 0.9075], "chosen": {"tau": 1.0}}),
        "student_kd_oracle": arm("student_kd_oracle", [{**FRAME, "teacher": "oracle"}], [0.8990, 0.8913, 0.8960],
                                 0.0039, 0.968, {"grid": GRID, "validation": [0.9095, 0.9070], "chosen": {"tau": 1.0}}),
    },
    "paired_bootstrap": {"metric": "word_accuracy", "test_examples": 5000, "resamples": 2000, "pairs": {
        "student_kd_oracle - student_ctc": {"difference": 0.0092, "interval_95": [0.0031, 0.0152],
                                            "share_first_not_better": 0.002}}},
    "best": {"oracle": "student_kd_oracle_align", "conventional": "student_kd_conventional", "none": "student_ctc"},
    "curves": {"target": 0.886, "target_from": "student_ctc",
               "epochs_to_target": {"student_kd_oracle": {"runs": [4, 5, None], "median": 5}}},
    "wall_seconds": 1234.0,
}


def rows(table: str) -> dict[str, str]:
    """First cell -> the whole row, of every table row."""
    return {line.split("|")[1].strip(): line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")}


def test_summary_lists_paper_arms_first_then_the_others():
    table = summary_table(RESULTS)
    order = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| student")]
    assert order == ["student_ctc", "student_kd_conventional", "student_kd_oracle", "student_kd_oracle_align"]
    found = rows(table)
    assert "| 860,000 | - |" in found["student_ctc"]
    assert "0.8954 ± 0.0039" in found["student_kd_oracle"] and "| 0.9680 |" in found["student_kd_oracle"]
    assert "frame(oracle, tau 1, w 1)" in found["student_kd_oracle"]
    extra = found["student_kd_oracle_align"]
    assert "frame(conventional, tau 1, w 1) + alignment(oracle, w 1)" in extra  # alignment has no temperature
    assert "lr 0.002" in extra and "0.9000 ± 0.0100" in extra
    assert "(3 seeds; primary metric: word_accuracy)" in table
    assert "by validation (seed 0): oracle student_kd_oracle_align; conventional student_kd_conventional" in table


def test_kd_text_of_plain_ctc_and_of_an_older_results_json():
    assert kd_text([]) == "-"
    assert kd_text([{"method": "guided", "teacher": "oracle", "tau": 2.0, "weight": 0.5}]) == "guided(oracle, w 0.5)"
    old = dict(RESULTS["students"]["student_kd_oracle"], kd={"method": "frame", "tau": 2.0, "weight": 1.0})
    assert "frame(tau 2, w 1)" in summary_table({**RESULTS, "students": {"student_kd_oracle": old}})
    seqkd = dict(RESULTS["students"]["student_kd_oracle"], targets="autoregressive")  # both tables say it
    for table in (summary_table, readme_students):
        assert "| targets of autoregressive + frame(oracle, tau 1, w 1) |" in table({**RESULTS, "students": {"a": seqkd}})


def test_tuning_shows_every_grid_and_flags_unequal_budgets():
    text = tuning_lines(RESULTS)
    assert "Every arm had a grid of the same size: 2 points" in text
    line = next(x for x in text.splitlines() if x.startswith("- student_kd_conventional"))
    assert "tau 1 chosen among **tau 1**: 0.9155; tau 2: 0.9075" in line
    assert "defaults chosen among **defaults**: 0.9000; lr 0.001: 0.8900" in text  # plain CTC's own grid
    uneven = copy.deepcopy(RESULTS)
    uneven["students"]["student_ctc"]["tuning"] = {"grid": [{}], "chosen": {}}
    text = tuning_lines(uneven)
    assert "**Unequal tuning budgets**" in text and "student_ctc 1, student_kd_conventional 2" in text
    assert "- student_ctc: a single setting (defaults): nothing to choose" in text


def test_teacher_table_has_every_teacher_with_its_overrides_and_copy_test():
    found = rows(teacher_table(RESULTS))
    assert set(found) == {"teacher", "conventional", "oracle", "oracle_positions"}
    assert "| oracle (target_positions true) | 750,000 | 12 | 2333 | 0.9900 | 0.9970 |" in found["oracle_positions"]
    assert "| 0.043 / 9.302 | 0.001 (1,024 pairs) |" in found["oracle"]
    assert found["conventional"].endswith("| - | - |")


def test_every_oracle_teacher_is_timed_against_the_conventional_one():
    text = time_to_best(RESULTS["teachers"])
    assert "The Oracle Teacher reached its best validation score in 1758 s, 0.26x" in text  # 1758 / 6671
    assert "The Oracle teacher oracle_positions reached" in text and "0.35x" in text  # 2333 / 6671
    assert "In CPU time to best, 1582 s against 6004 s: 0.26x." in text  # 0.9 x each


def test_bootstrap_and_curve_tables():
    line = rows(bootstrap_table(RESULTS))["student_kd_oracle - student_ctc"]
    assert "| +0.92 | +0.31 to +1.52 | 0.2% of resamples |" in line  # fractions x 100: points
    assert "5,000 test examples, 2,000 resamples" in bootstrap_table(RESULTS)
    assert bootstrap_table({**RESULTS, "paired_bootstrap": None}) == ""
    curves = curves_table(RESULTS)
    assert "validation word_accuracy 0.8860, the final validation score of student_ctc" in curves
    assert "| student_kd_oracle | 4 / 5 / never | 5 |" in curves


def test_readme_tables_bold_the_best_arm_per_column():
    text = render_readme_tables(RESULTS)
    found = rows(text)
    assert "**0.9000 ± 0.0100**" in found["student_kd_oracle_align"]  # best word accuracy
    assert "| 0.8954 ± 0.0039 |" in found["student_kd_oracle"] and "**0.968**" not in found["student_kd_oracle"]
    assert "**0.970**" in found["student_kd_oracle_align"]  # best alignment
    assert found["student_ctc"].count("**0.0250 ± 0.0010**") == 1  # a tie on CER: every arm in bold
    assert "| 4.03M | 0.938 (12; 6,671 s) | 0.9180 |" in found["conventional"]
    assert "| 0.75M | 0.947 (10; 1,758 s) | 0.9510 (reads the labels) |" in found["oracle"]
    assert "oracle_positions: oracle (target_positions true)" in found
    assert "student_kd_oracle - student_ctc" in found


def test_python_m_report_prints_the_tables(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == render_readme_tables(RESULTS)


def test_report_and_curves_written_without_checkpoints(tmp_path):
    path = write_report(None, RESULTS, tmp_path)
    text = path.read_text()
    for heading in ("## Students", "## Tuning", "## Teachers", "## Paired bootstrap", "## Learning curves"):
        assert heading in text
    assert (tmp_path / "plots" / "learning_curves.png").stat().st_size > 1000
    assert not (tmp_path / "plots" / "spikes.png").exists()
    assert "Checkpoints not found, left out: conventional, oracle, oracle_positions, student_ctc" in text


def test_spikes_of_the_checkpoints_found_under_a_moved_run(tmp_path, tiny_checkpoint):
    from oracle_kd.tasks import get_task

    moved = tmp_path / "run" / "students" / "student_ctc" / "seed0" / "best.safetensors"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(tiny_checkpoint.read_bytes())
    assert locate_checkpoint("/elsewhere/run/students/student_ctc/seed0/best.safetensors", tmp_path / "run") == moved
    assert locate_checkpoint("/elsewhere/best.safetensors", tmp_path / "run") is None  # a bare file name is no match
    task = get_task("scene-text")
    test = [dict(e, text="ab") for e in task.example_inputs(2)]
    text = write_report(task, RESULTS, tmp_path / "run", test_set=test, spike_examples=2).read_text()
    assert (tmp_path / "run" / "plots" / "spikes.png").stat().st_size > 1000
    assert "![spikes](plots/spikes.png)" in text
    assert "left out: conventional, oracle, oracle_positions, student_kd_conventional" in text


def test_rendering_again_from_results_json_keeps_an_earlier_spike_plot(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "spikes.png").write_bytes(b"png")
    text = write_report(None, RESULTS, tmp_path).read_text()
    assert "![spikes](plots/spikes.png)" in text and "not found" not in text


def test_readme_tables_go_between_their_markers_and_missing_markers_are_named(tmp_path):
    from oracle_kd.io import InputError
    from oracle_kd.report import replace_section

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:x-full:start -->\nold table\n<!-- results:x-full:end -->\nafter\n")
    replace_section(readme, "x-full", "| new |\n")
    assert readme.read_text() == "intro\n<!-- results:x-full:start -->\n| new |\n<!-- results:x-full:end -->\nafter\n"
    with pytest.raises(InputError, match="no <!-- results:y-full:start --> ... <!-- results:y-full:end --> markers"):
        replace_section(readme, "y-full", "| t |")
