"""User data for translation: a TSV file or two aligned files; bad lines are skipped and named."""

import pytest

from oracle_kd.io import InputError
from oracle_kd.skips import SkipLog
from oracle_kd.tasks.translation.formats import MAX_LINE_CHARS, read_pairs
from oracle_kd.tasks.translation.task import TranslationTask


def test_a_tsv_gives_its_pairs_and_skips_each_bad_line_with_its_reason(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_bytes(b"Save\tSpeichern\r\n"  # a Windows line end is not part of the text
                     b"no tab here\n"
                     b"a\tb\tc\n"
                     b"\tLeer\n"
                     b"Caf\xe9\tKaffee\n"  # Latin-1, not UTF-8
                     + b"x" * (MAX_LINE_CHARS + 1) + b"\ty\n"
                     b"Open  the\tdoor \xc3\xb6ffnen\n")
    skips = SkipLog(quiet=True)
    pairs = read_pairs(path, skips)
    assert [(s, t) for s, t, _ in pairs] == [("Save", "Speichern"), ("Open the", "door öffnen")]
    assert pairs[1][2] == f"{path}:7"
    reasons = {item.source.rsplit(":", 1)[1]: item.reason for item in skips.items}
    assert reasons == {"2": "expected source<TAB>target, found 0 tabs", "3": "expected source<TAB>target, found 2 tabs",
                       "4": "empty source", "5": "not UTF-8 (byte 3 of the line)",
                       "6": f"line of {MAX_LINE_CHARS + 3} characters; the limit is {MAX_LINE_CHARS}"}


def test_aligned_files_pair_line_by_line(tmp_path):
    (tmp_path / "source.txt").write_text("Save\nOpen\n\n")
    (tmp_path / "target.txt").write_text("Speichern\nÖffnen\nLeer\n")
    skips = SkipLog(quiet=True)
    assert [(s, t) for s, t, _ in read_pairs(tmp_path, skips)] == [("Save", "Speichern"), ("Open", "Öffnen")]
    assert [(i.source, i.reason) for i in skips.items] == [(f"{tmp_path}:3", "empty source")]


def test_misaligned_files_are_refused_in_one_line(tmp_path):
    (tmp_path / "source.txt").write_text("a\nb\nc\n")
    (tmp_path / "target.txt").write_text("x\ny\n")
    with pytest.raises(InputError, match="source.txt has 3 lines, target.txt 2") as err:
        read_pairs(tmp_path, SkipLog(quiet=True))
    assert "\n" not in str(err.value)


def _file(folder, name, text):
    (folder / name).write_text(text)
    return folder / name


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nope.tsv", "translation data not found"),
    (lambda d: (d / "only").mkdir() or d / "only", "missing source.txt, target.txt"),
    (lambda d: _file(d, "e.tsv", ""), "the data set is empty"),
    (lambda d: _file(d, "bad.tsv", "no tab\n"), "all 1 sentence pairs were skipped"),
])
def test_a_data_set_that_gives_nothing_is_an_input_error(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        read_pairs(make(tmp_path), SkipLog(quiet=True))


def test_the_first_training_set_trains_the_tokenizer_and_others_reuse_it(tmp_path):
    from oracle_kd.tasks.translation.numbers import number_splits

    pairs = number_splits({"train": 300, "val": 20, "test": 1}, seed=0)
    for split in ("train", "val"):
        (tmp_path / f"{split}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs[split]))
    task = TranslationTask()
    with pytest.raises(InputError, match="no tokenizer"):
        task.dataset(tmp_path / "val.tsv", None, SkipLog(quiet=True))
    model = {"d_model": 16, "heads": 2, "upsample": 3}
    train = task.dataset(tmp_path / "train.tsv", None, SkipLog(quiet=True), train=True, model_cfg=model)
    tokenizer = task.tokenizer
    val = task.dataset(tmp_path / "val.tsv", None, SkipLog(quiet=True), model_cfg=model)
    assert task.tokenizer is tokenizer and len(val) == 20 and len(train) > 250
    assert val[0]["source"] == f"{tmp_path / 'val.tsv'}:1"
