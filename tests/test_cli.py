"""The command line fits scripts and shared machines: every option explained with its default,
the same flags for threads, progress and the cache everywhere, results alone on stdout."""

import argparse
import json

import pytest

from oracle_kd import __version__
from oracle_kd.arguments import shows_no_default
from oracle_kd.cli import build_parser, main

# Commands that compute (models, data, plots of models): each takes --threads and --no-progress.
# `report` only reads results.json files and renders tables.
COMPUTING = {"experiment", "data", "train", "evaluate", "recognize", "transcribe", "translate", "export", "bench"}


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def options(parser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def test_every_command_is_walked():
    assert set(commands()) == COMPUTING | {"report"}


@pytest.mark.parametrize("name", sorted(COMPUTING | {"report"}))
def test_every_option_has_help_text_and_shows_its_default(name):
    parser = commands()[name]
    for action in options(parser):
        assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings or action.dest}"
        if not shows_no_default(action.default):  # None, False, []: nothing worth showing
            shown = parser._get_formatter()._expand_help(action)  # what --help prints for it
            assert "default" in shown, f"{name} {action.option_strings}: {shown}"


@pytest.mark.parametrize("name", sorted(COMPUTING))
def test_every_computing_command_takes_threads_and_no_progress(name):
    flags = {flag for action in options(commands()[name]) for flag in action.option_strings}
    assert {"--threads", "--no-progress"} <= flags


def test_the_cache_folder_has_one_flag_name():
    for name, parser in commands().items():
        for action in options(parser):
            if "cache" in (action.help or "").lower() and "folder" in (action.help or "").lower():
                assert action.dest == "cache" and action.option_strings[0] == "--cache", f"{name} {action.option_strings}"
    assert {n for n, p in commands().items() if any(a.dest == "cache" for a in p._actions)} >= {"experiment", "data",
                                                                                                 "train"}


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"oracle-kd {__version__}"


def test_only_the_result_goes_to_stdout(tmp_path, monkeypatch, capsys):
    import oracle_kd.train_command as train_command

    def chatty_train(args):  # what Lightning does: a progress bar and notices printed to stdout
        print("Epoch 0: 100%|##########| 3/3 [00:01<00:00]")
        return {"best_val": 0.5, "checkpoint": "best.safetensors"}

    monkeypatch.setattr(train_command, "train_one", chatty_train)
    assert main(["train", "scene-text", "--model", "student", "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"best_val": 0.5, "checkpoint": "best.safetensors"}
    assert "Epoch 0" in err


@pytest.mark.parametrize("option", [["--kd", "frame"], ["--tau", "3"], ["--kd-weight", "0.5"], ["--top-k", "4"],
                                    ["--teacher-store", "store"]])
def test_kd_options_without_a_teacher_are_an_error(tmp_path, capsys, option):
    assert main(["train", "scene-text", "--model", "student", "--out", str(tmp_path / "run"), *option]) == 2
    err = capsys.readouterr().err
    assert option[0] in err and "--teacher" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before any work
