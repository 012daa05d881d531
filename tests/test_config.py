"""Preset overrides (`oracle-kd experiment --set KEY.PATH=VALUE`)."""

import pytest

from oracle_kd.config import apply_overrides, load_preset
from oracle_kd.io import InputError


def test_overrides_set_nested_values_as_yaml_and_leave_the_preset_alone():
    cfg = load_preset("speech", "quick")
    out = apply_overrides(cfg, ["models.oracle.target_context=5", "kd.grid=[{tau: 1.0, weight: 0.5}]",
                                "train.student.lr=1e-3"])
    assert out["models"]["oracle"]["target_context"] == 5
    assert out["kd"]["grid"] == [{"tau": 1.0, "weight": 0.5}]
    assert out["train"]["student"]["lr"] == 1e-3 and out["train"]["oracle"] == cfg["train"]["oracle"]
    assert "target_context" not in cfg["models"]["oracle"] and cfg["train"]["student"]["lr"] == 0.003
    assert apply_overrides(cfg, []) == cfg


@pytest.mark.parametrize("bad, says", [("models.oracle.target_context", "KEY.PATH=VALUE"),
                                       ("models..d_model=3", "KEY.PATH=VALUE"),
                                       ("modles.oracle.d_model=3", "modles is not a section"),
                                       ("models.oracle.d_model.x=3", "models.oracle.d_model is not a section"),
                                       ("kd.grid=[1, 2", "not YAML")])
def test_bad_overrides_are_named(bad, says):
    with pytest.raises(InputError, match=says):
        apply_overrides(load_preset("speech", "quick"), [bad])


def test_a_preset_one_task_has_is_refused_for_another_with_the_choices_named(capsys):
    from oracle_kd.cli import main

    assert load_preset("speech", "large")["data"]["n_train"] > load_preset("speech", "full")["data"]["n_train"]
    assert main(["data", "scene-text", "--preset", "large", "--out", "unused"]) == 2
    assert "unknown preset 'large' for task scene-text: choose from smoke, quick, full" in capsys.readouterr().err
