"""The report's reading of teacher runs that never left the CTC blank plateau."""

from oracle_kd.experiment import left_plateau
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
