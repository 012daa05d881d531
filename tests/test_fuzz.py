"""Property: every reader of user input, given any bytes, returns data or raises the
project's own error (InputError; ValueError from the two decoders), nothing else.

The targets are fuzz/targets.py's, which atheris runs for longer (fuzz/run.py).
Inputs are random bytes, valid files with bytes changed or cut, and text built from
the pieces these formats are made of (tabs, line ends, NUL, paths that escape).
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS, seeds

PIECES = ["\t", "\n", "\r\n", "\0", " ", "a.png", "a.wav", "/dev/zero", "../", "..\\", "\ufeff", "é", "日", "\u2028",
          '"', "{", "}", "[", "]", ":", ",", '"audio_filepath"', '"text"', '"duration"', '"offset"', "1e308", "-1",
          "NaN", "84-121123-0000", "HELLO", "word"]


def mutated(seed: bytes, edits: list, cut):
    data = bytearray(seed)
    for position, value in edits:
        if data:
            data[position % len(data)] = value
    return bytes(data if cut is None else data[: cut % (len(data) + 1)])


def inputs(name: str):
    base = seeds(name)
    edited = st.builds(mutated, st.sampled_from(base),
                       st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6),
                       st.none() | st.integers(0, 1 << 20))
    text = st.lists(st.sampled_from(PIECES) | st.text(max_size=4), max_size=24).map(lambda p: "".join(p).encode())
    return st.one_of(st.binary(max_size=1024), edited, text, st.sampled_from(base))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


EXAMPLES = {"checkpoint": 30, "checkpoint_header": 30, "lmdb": 30}  # a model is built per input: fewer


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_any_bytes_give_data_or_the_projects_own_error(name, scratch):
    target = TARGETS[name]

    @settings(max_examples=EXAMPLES.get(name, 60), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(inputs(name))
    def check(data):
        target(data, scratch)

    check()


def test_the_seeds_are_read_as_data(scratch):
    """The seeds are valid inputs, so mutations start from files that reach every check."""
    from oracle_kd.skips import SkipLog
    from oracle_kd.tasks.scene_text.formats import read_examples
    from oracle_kd.tasks.speech.formats import read_utterances

    TARGETS["labels_tsv"](seeds("labels_tsv")[0], scratch)
    assert [e.label for e in read_examples(scratch / "tsv", SkipLog(quiet=True))] == ["hello"]
    TARGETS["lmdb"](seeds("lmdb")[0], scratch)
    assert [e.label for e in read_examples(scratch / "lmdb", SkipLog(quiet=True))] == ["word", "x"]
    TARGETS["lmdb_records"](seeds("lmdb_records")[0], scratch)
    assert [e.label for e in read_examples(scratch / "lmdb-records", SkipLog(quiet=True))] == ["word"]
    TARGETS["manifest"](seeds("manifest")[0], scratch)
    assert [u.text for u in read_utterances(scratch / "manifest" / "m.jsonl", SkipLog(quiet=True))] == ["hello world",
                                                                                                       "hi"]
    TARGETS["librispeech"](seeds("librispeech")[0], scratch)
    assert [u.text for u in read_utterances(scratch / "librispeech", SkipLog(quiet=True))] == ["hello world"]
