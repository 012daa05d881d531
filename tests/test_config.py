"""Preset overrides (`oracle-kd experiment --set KEY.PATH=VALUE`)."""

import pytest

from oracle_kd.config import apply_overrides, load_preset, merge_preset
from oracle_kd.io import InputError


def test_overrides_set_nested_values_as_yaml_and_leave_the_preset_alone():
    cfg = load_preset("speech", "quick")
    out = apply_overrides(cfg, ["models.oracle.target_context=5", "grid.kd=[{tau: 1.0, weight: 0.5}]",
                                "train.student.lr=1e-3"])
    assert out["models"]["oracle"]["target_context"] == 5
    assert out["grid"]["kd"] == [{"tau": 1.0, "weight": 0.5}]
    assert out["train"]["student"]["lr"] == 1e-3 and out["train"]["oracle"] == cfg["train"]["oracle"]
    assert "target_context" not in cfg["models"]["oracle"] and cfg["train"]["student"]["lr"] == 0.003
    assert apply_overrides(cfg, []) == cfg


@pytest.mark.parametrize("bad, says", [("models.oracle.target_context", "KEY.PATH=VALUE"),
                                       ("models..d_model=3", "KEY.PATH=VALUE"),
                                       ("modles.oracle.d_model=3", "modles is not a section"),
                                       ("models.oracle.d_model.x=3", "models.oracle.d_model is not a section"),
                                       ("grid.kd=[1, 2", "not YAML")])
def test_bad_overrides_are_named(bad, says):
    with pytest.raises(InputError, match=says):
        apply_overrides(load_preset("speech", "quick"), [bad])


def test_a_preset_one_task_has_is_refused_for_another_with_the_choices_named(capsys):
    from oracle_kd.cli import main

    assert load_preset("speech", "large")["data"]["n_train"] > load_preset("speech", "full")["data"]["n_train"]
    assert main(["data", "scene-text", "--preset", "large", "--out", "unused"]) == 2
    assert "unknown preset 'large' for task scene-text: choose from smoke, quick, full" in capsys.readouterr().err


def experiment(overrides, preset="smoke", task="scene-text"):
    from oracle_kd.config import experiment_config
    from oracle_kd.tasks import get_task

    return experiment_config(get_task(task), preset, overrides)


def test_presets_load_into_typed_configs_with_the_three_paper_arms():
    for task, presets in (("scene-text", ("smoke", "quick", "full", "screen", "confirm")), ("speech", ("smoke", "quick", "full", "large", "screen"))):
        for preset in presets:
            cfg = experiment(None, preset, task)
            assert {"student_ctc", "student_kd_conventional", "student_kd_oracle"} <= set(cfg.arms)
            assert len({len(cfg.arm_grid(arm)) for arm in cfg.arms}) == 1  # the same grid size for every arm
    cfg = experiment(None, "smoke")
    assert cfg.arms["student_kd_oracle"].kd[0].teacher == "oracle" and cfg.arms["student_ctc"].kd == []
    assert cfg.teacher_model("oracle_positions")["target_positions"] is True
    assert cfg.train["student"].max_epochs == 1 and isinstance(cfg.train["student"].lr, float)


@pytest.mark.parametrize("bad, says", [
    ("kd.metod=guided", "kd is not a section"),  # the old top-level section is gone, and says so
    ("arms.student_kd_oracle.kd=[{metod: guided, teacher: oracle}]", r"arms.student_kd_oracle.kd.0: unknown KDTerm keys: metod"),
    ("arms.student_kd_oracle.kd=[{method: guidd, teacher: oracle}]", "arms.student_kd_oracle.kd.0.method: 'guidd'"),
    ("arms.student_kd_oracle.kd=[{method: frame, teacher: orcale}]", "'orcale' is not a teacher of this preset"),
    ("train.student.max_epochs=two", "train.student.max_epochs: expected an integer, got 'two'"),
    ("train.student.lr=fast", "train.student.lr: expected a number"),
    ("train.student.patiense=3", "train.student: unknown TrainConfig keys: patiense"),
    ("models.oracle.d_modle=64", "teachers.oracle: unknown OracleConfig keys: d_modle"),
    ("seeds=0", "seeds: at least 1"),
    ("grid.plain=[{lr: 0.1}, {lr: 0.2}]", "every arm needs a grid of the same size"),
    ("grid.kd=[{tau: warm}]", "arms.student_kd_conventional.grid.tau: expected a number"),
    ("grid.kd=[{tua: 1.0}]", "arms.student_kd_conventional.grid: unknown keys tua"),
    ("arms.student_ctc={grid: [{tau: 1.0}]}", "arms.student_ctc.grid: unknown keys tau"),  # no KD term to set
    ("arms={student_ctc: {}}", "missing student_kd_conventional, student_kd_oracle"),
])
def test_a_wrong_setting_is_one_error_naming_its_key(bad, says):
    with pytest.raises(InputError, match=says):
        experiment([bad])


def test_the_command_line_and_the_library_share_the_kd_defaults(tmp_path):
    from oracle_kd.cli import build_parser
    from oracle_kd.config import KDTerm
    from oracle_kd.train_command import kd_terms

    (tmp_path / "t.safetensors").write_bytes(b"")  # a regular file: what kd_terms checks of a teacher
    args = build_parser().parse_args(["train", "scene-text", "--model", "student", "--out", "x",
                                      "--teacher", str(tmp_path / "t.safetensors")])
    [term] = kd_terms(args)
    assert (term.tau, term.weight, term.method) == (KDTerm.tau, KDTerm.weight, "frame")


def test_a_preset_leaves_out_the_defaults_teachers_and_arms_it_sets_to_null():
    presets = {
        "defaults": {"teachers": {"conventional": {"model": "c"}, "oracle": {"model": "o"}},
                     "arms": {"student_ctc": {}, "student_kd_oracle": {"kd": [{"teacher": "oracle"}]}},
                     "train": {"student": {"lr": 0.003}}},
        "lean": {"teachers": {"oracle": None}, "arms": {"student_kd_oracle": None}, "train": {"student": {"lr": None}}},
    }
    cfg = merge_preset(presets, "lean")
    assert cfg["teachers"] == {"conventional": {"model": "c"}}
    assert cfg["arms"] == {"student_ctc": {}}
    assert cfg["train"] == {"student": {"lr": None}}  # only teachers and arms are left out; the rest is a value
    assert presets["defaults"]["arms"]["student_kd_oracle"]  # the defaults themselves are untouched
