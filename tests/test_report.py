"""The report's reading of teacher runs: the CTC blank plateau, and wall time that a pause inflated."""

from oracle_kd.experiment import cpu_seconds_at, left_plateau, median_epoch_seconds
from oracle_kd.report import teacher_table, time_to_best


def teacher(seconds, cer, **extra):
    return {"params": 10, "epochs": 1, "train_seconds": seconds, "test": {"wer": cer, "cer": cer},
            "alignment_accuracy": None, "converged": left_plateau({"wer": cer, "cer": cer}), **extra}


def test_all_blank_best_epoch_is_not_convergence():
    assert not left_plateau({"wer": 1.0, "cer": 1.0})
    assert not left_plateau(None)
    assert left_plateau({"wer": 1.0, "cer": 0.8})


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
    steady = [{"epoch": e, "seconds": 100.0 * e} for e in range(1, 7)]
    paused = [{"epoch": e, "seconds": 100.0 * e + (1500.0 if e >= 3 else 0.0)} for e in range(1, 7)]
    assert median_epoch_seconds(steady) == median_epoch_seconds(paused) == 100.0
    assert median_epoch_seconds([]) is None
    oracle = teacher(60, 0.2, epochs=3, median_epoch_seconds=20.0)
    conv = teacher(paused[-1]["seconds"], 0.3, epochs=6, median_epoch_seconds=median_epoch_seconds(paused))
    text = time_to_best({"oracle": oracle, "conventional": conv})
    assert "0.03x the conventional" in text  # raw wall time: 60 / 2100
    assert "3 x 20 s against 6 x 100 s: 0.10x" in text  # 60 / 600, the pause left out


def test_cpu_time_to_best_is_reported_when_both_teachers_counted_it():
    history = [{"epoch": 1, "seconds": 9.0, "cpu_seconds": 5.0}, {"epoch": 2, "seconds": 99.0, "cpu_seconds": 10.0}]
    assert cpu_seconds_at(history, 2) == 10.0 and cpu_seconds_at([{"epoch": 1, "seconds": 9.0}], 1) is None
    oracle = teacher(60, 0.2, cpu_seconds_to_best=10.0)
    conv = teacher(100, 0.3, cpu_seconds_to_best=40.0)
    assert "In CPU time to best, 10 s against 40 s: 0.25x." in time_to_best({"oracle": oracle, "conventional": conv})
    old = teacher(100, 0.3)  # a run of an older version, without CPU time
    assert "CPU time" not in time_to_best({"oracle": oracle, "conventional": old})
