"""results.json from run records: which pairs are compared, which arm is best, the curves, portable paths."""

from oracle_kd.config import experiment_config
from oracle_kd.results import best_arms, comparison_pairs, curves, portable
from oracle_kd.tasks import get_task


def cfg():
    arm = "arms.student_blank_oracle={kd: [{method: blank_aware, teacher: oracle}]}"
    return experiment_config(get_task("scene-text"), "smoke", [arm])


def run(val, history=()):
    return {"validation": {"word_accuracy": val}, "history": [{"epoch": i + 1, "val_word_accuracy": v}
                                                              for i, v in enumerate(history)]}


def test_every_arm_meets_plain_ctc_and_every_oracle_arm_meets_every_conventional_arm():
    arms = ["student_ctc", "student_kd_conventional", "student_kd_oracle", "student_blank_oracle"]
    assert comparison_pairs(cfg(), arms) == [
        ("student_kd_conventional", "student_ctc"), ("student_kd_oracle", "student_ctc"),
        ("student_blank_oracle", "student_ctc"), ("student_kd_oracle", "student_kd_conventional"),
        ("student_blank_oracle", "student_kd_conventional")]


def test_the_best_arm_of_each_family_is_chosen_on_validation_not_test():
    students = {"student_ctc": {"runs": [run(0.7)]}, "student_kd_conventional": {"runs": [run(0.8)]},
                "student_kd_oracle": {"runs": [run(0.81)]}, "student_blank_oracle": {"runs": [run(0.85)]}}
    spec = get_task("scene-text").metrics
    assert best_arms(cfg(), students, spec) == {"oracle": "student_blank_oracle", "conventional": "student_kd_conventional",
                                                "none": "student_ctc"}


def test_epochs_to_plain_ctcs_final_score_count_a_seed_that_never_gets_there_as_slowest():
    # plain CTC ends at 0.6 and 0.8 (target: their mean, 0.7); the KD arm reaches 0.7 at epochs 2, 3 and never
    students = {"student_ctc": {"runs": [run(0.6, [0.1, 0.6]), run(0.8, [0.2, 0.8])]},
                "student_kd_oracle": {"runs": [run(0.9, [0.5, 0.7]), run(0.9, [0.3, 0.5, 0.75]), run(0.6, [0.6])]}}
    found = curves(students, get_task("scene-text").metrics)
    assert found["target"] == 0.7
    assert found["epochs_to_target"]["student_kd_oracle"] == {"runs": [2, 3, None], "median": 3}
    assert found["epochs_to_target"]["student_ctc"] == {"runs": [None, 2], "median": None}  # median of 2 and never


def test_published_results_hold_no_paths_of_the_machine_that_made_them():
    results = {"teachers": {"oracle": {"checkpoint": "/home/u/out/teachers/oracle/best.safetensors"}},
               "students": {"a": {"checkpoints": ["/home/u/out/students/a/default/seed0/best.safetensors"]}},
               "data": {"path": "/home/u/.cache/oracle-kd/scene-text/0eadcae04126"}, "other": "/home/u/elsewhere"}
    got = portable(results, "/home/u/out")
    assert got["teachers"]["oracle"]["checkpoint"] == "teachers/oracle/best.safetensors"
    assert got["students"]["a"]["checkpoints"] == ["students/a/default/seed0/best.safetensors"]
    assert got["data"]["path"] == "0eadcae04126" and got["other"] == "/home/u/elsewhere"
