"""Corpora larger than memory: user data is indexed up front and decoded when read, in
loader workers; skips found then are listed; DDP ranks read disjoint shards; the teacher
store is memory-mapped."""

import json
import pickle

import lmdb
import numpy as np
import pytest
import soundfile
import torch

from oracle_kd.cli import main
from oracle_kd.config import TrainConfig
from oracle_kd.diagnostics import evaluate
from oracle_kd.lazy import SKIPPED, Strings
from oracle_kd.skips import SkipLog
from oracle_kd.store import module_outputs
from oracle_kd.tasks import get_task
from oracle_kd.tasks.scene_text.formats import read_examples, write_labels_tsv, write_lmdb
from oracle_kd.tasks.speech.formats import read_utterances, write_manifest
from oracle_kd.training import fit, loader

from .conftest import SPEECH_TINY, TINY

SCENE, SPEECH = get_task("scene-text"), get_task("speech")
FRAMES = 32  # the tiny scene-text student's frames: labels longer than this are skipped up front


def quiet():
    return SkipLog(quiet=True)


def word_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 40 + 7 * i), dtype=np.uint8) for i in range(n)]


def lmdb_with_bad_entries(folder, n=8):
    """n examples; label 3 is outside the label set (skipped up front), image 5 is not an
    image (found only when read)."""
    labels = [f"w{i}rd" for i in range(n)]
    labels[2] = "café"
    write_lmdb(folder, word_images(n), labels)
    env = lmdb.open(str(folder), lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"image-000000005", b"\x89PNG cut short")
    env.close()
    return folder


def tones(n, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return [(0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
            for i in range(n)]


def manifest_with_bad_entries(folder, n=6):
    """n utterances; transcript 2 holds digits (skipped up front), audio 4 is silent (found
    only when its samples are read)."""
    texts = [f"word {w}" for w in "abcdefghij"[:n]]
    texts[1] = "word 2"
    audios = tones(n)
    audios[3][:] = 0.0
    return write_manifest(folder, audios, texts)


def every(dataset):
    return [dataset[i] for i in range(len(dataset))]


# --- the same examples as the eager readers -------------------------------------


@pytest.mark.parametrize("write", [write_lmdb, write_labels_tsv])
def test_lazy_images_are_the_examples_the_eager_reader_gives(tmp_path, write):
    labels = ["Hello", "café", "w0rld", "a" * 40, "x"]
    folder = write(tmp_path / "data", word_images(5), labels)
    eager = read_examples(folder, quiet(), max_label_length=FRAMES)
    skips = quiet()
    lazy = SCENE.dataset(folder, None, skips, model_cfg=TINY["student"])
    assert len(skips) == 2 and len(lazy) == len(eager) == 3  # café and the 40-letter label, before any pixel
    for example, expected in zip(every(lazy), eager):
        assert (example["text"], example["source"]) == (expected.label, expected.source)
        assert np.array_equal(example["image"], expected.image)


def test_lazy_utterances_are_the_ones_the_eager_reader_gives(tmp_path):
    texts = ["hello there", "one 1", "good bye", "word"]
    manifest = write_manifest(tmp_path / "data", tones(4), texts)
    eager = read_utterances(manifest, quiet())
    lazy = SPEECH.dataset(manifest, None, quiet(), model_cfg=SPEECH_TINY)
    assert len(lazy) == len(eager) == 3
    assert list(lazy.source_lengths()) == [16000] * 3  # from the headers: length buckets without decoding
    for example, expected in zip(every(lazy), eager):
        assert (example["text"], example["source"]) == (expected.text, expected.source)
        assert np.array_equal(example["audio"], expected.audio)


def test_strings_round_trip_any_text_and_pickle_small():
    items = ["a", "", "héllo", "bad\udc80byte", "lone \ud800"]
    strings = Strings(items)
    assert list(strings) == items and list(pickle.loads(pickle.dumps(strings))) == items
    assert strings.take([2, 0])[0] == "héllo"


# --- skips found when an example is read ------------------------------------------


def test_an_image_that_cannot_be_decoded_is_found_when_read_and_listed_by_evaluate(
        tiny_checkpoint, tmp_path, monkeypatch, capsys):
    folder = lmdb_with_bad_entries(tmp_path / "db")
    skips = quiet()
    assert len(SCENE.dataset(folder, None, skips, model_cfg=TINY["student"])) == 7 and len(skips) == 1
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(tiny_checkpoint), "--data", str(folder), "--workers", "1"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 6 and metrics["skipped"] == 2
    rows = (tmp_path / "skipped.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[0] for r in rows] == [f"{folder}:label-000000003", f"{folder}:image-000000005"]
    assert "unreadable image" in rows[1]


def test_silent_audio_is_found_when_read(tmp_path):
    manifest = manifest_with_bad_entries(tmp_path / "data")
    skips = quiet()
    data = SPEECH.dataset(manifest, None, skips, model_cfg=SPEECH_TINY)
    assert len(data) == 5 and len(skips) == 1  # the digits; the silent file's header is fine
    model = SPEECH.build_model("student", SPEECH_TINY)
    metrics, decoded = evaluate(SPEECH, model, data, batch_size=2)
    assert metrics["n"] == 4 and [s.source for s in decoded.skipped] == [f"{manifest}:4"]
    assert "silent audio" in decoded.skipped[0].reason


def test_training_lists_what_its_loader_workers_found_once(tmp_path):
    folder = lmdb_with_bad_entries(tmp_path / "db")
    skips = quiet()
    data = SCENE.dataset(folder, None, skips, model_cfg=TINY["student"])
    cfg = TrainConfig(max_epochs=2, batch_size=1, warmup_steps=1, patience=5, num_workers=1)  # a batch of the bad one alone
    fit(SCENE, "student", TINY["student"], data, data, cfg, tmp_path / "run", progress=False, skips=skips)
    rows = (tmp_path / "run" / "skipped.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[0] for r in rows] == [f"{folder}:label-000000003", f"{folder}:image-000000005"]


def test_every_example_unreadable_is_one_clear_error(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    write_lmdb(tmp_path / "db", word_images(2), ["ab", "cd"])
    env = lmdb.open(str(tmp_path / "db"), lock=False)
    with env.begin(write=True) as txn:
        for key in (b"image-000000001", b"image-000000002"):
            txn.put(key, b"not an image")
    env.close()
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(tiny_checkpoint), "--data", str(tmp_path / "db")]) == 2
    assert "no usable examples" in capsys.readouterr().err
    assert len((tmp_path / "skipped.tsv").read_text().splitlines()) == 3


# --- DDP shards -----------------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_two_ranks_decode_disjoint_shards_that_cover_the_data_set(tmp_path, monkeypatch, train):
    manifest = write_manifest(tmp_path / "a", tones(4, 1.0) + tones(4, 1.5), ["hello"] * 8)
    folder = write_lmdb(tmp_path / "b", word_images(8), ["word"] * 8)
    for task, data in ((SPEECH, SPEECH.dataset(manifest, None, quiet(), model_cfg=SPEECH_TINY)),
                       (SCENE, SCENE.dataset(folder, None, quiet(), model_cfg=TINY["student"]))):
        read = []
        monkeypatch.setattr(type(data), "read", lambda self, i, original=type(data).read: (read.append(i),
                                                                                        original(self, i))[1])
        shards = []
        for rank in (0, 1):
            read.clear()
            batches = loader(task, data, batch_size=2, seed=0 if train else None, rank=rank, world_size=2)
            shards.append([i for batch in batches for i in batch.indices.tolist()])
            assert sorted(read) == sorted(shards[-1])  # this rank decoded its own share, nothing else
        assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(8))


# --- the teacher output store ------------------------------------------------------


class Varying(torch.nn.Module):
    """A 'teacher' whose frame count follows the source: log-softmax of the first frames' pixels."""

    def forward(self, sources, source_lengths, targets=None, target_lengths=None):
        x = sources[:, 0, :, :].transpose(1, 2)[:, :, : SCENE.vocab.num_classes]  # (batch, width, classes)
        lengths = 8 + 3 * (targets[:, 1] % 5)  # 8..20 frames, by the label's second character
        return x.log_softmax(-1), lengths


@pytest.mark.parametrize("top_k", [None, 3])
def test_the_memory_mapped_store_returns_the_teachers_outputs(tmp_path, top_k):
    folder = lmdb_with_bad_entries(tmp_path / "db")
    data = SCENE.dataset(folder, None, quiet(), model_cfg=TINY["student"])
    teacher = Varying()
    out = module_outputs(tmp_path / "store", "t", teacher, SCENE, data, top_k=top_k, batch_size=3)
    assert out.meta["layout"] == "ragged" and isinstance(out.values, np.memmap)
    copy = pickle.loads(pickle.dumps(out))  # what a spawned loader worker gets: the files' names, not their bytes
    assert not [v for v in out.__getstate__().values() if isinstance(v, np.memmap)]
    assert isinstance(copy.values, np.memmap)
    for i in range(len(data)):
        example = data[i]
        if SKIPPED in example:
            assert out[i][1] == 0  # found unusable when read: no frames, and training skips it too
            continue
        batch = SCENE.collate([example])
        log_probs, frames = teacher(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
        expected = log_probs[0, : int(frames[0])].half().float().numpy()
        got, n = out[i]
        assert n == int(frames[0]) and np.array_equal(copy[i][0], got)
        if top_k is None:
            assert np.array_equal(got, expected)
        else:  # the k best log-probs are kept exactly (the rest share what is left, below them here)
            assert np.array_equal(np.sort(got)[:, -top_k:], np.sort(expected)[:, -top_k:])


def test_lmdb_readers_reopen_the_map_and_still_read_every_value(tmp_path, monkeypatch):
    from oracle_kd.tasks.scene_text import lmdb_reader

    folder = write_lmdb(tmp_path / "db", word_images(6), [f"w{i}" for i in range(6)])
    before = read_examples(folder, quiet())
    monkeypatch.setattr(lmdb_reader, "REOPEN_BYTES", 1)  # reopen after every read, and walk one key at a time
    after = read_examples(folder, quiet())
    assert [np.array_equal(a.image, b.image) for a, b in zip(before, after)] == [True] * 6


def test_corpus_error_rates_scored_in_chunks_equal_jiwers():
    import jiwer

    from oracle_kd.tasks.base import corpus_error_rate

    rng = np.random.default_rng(0)
    refs = ["".join(rng.choice(list("ab c"), size=rng.integers(1, 12))).strip() or "a" for _ in range(300)]
    hyps = ["".join(rng.choice(list("ab c"), size=rng.integers(0, 12))) for _ in range(300)]
    assert corpus_error_rate(jiwer.process_words, refs, hyps, chunk=7) == pytest.approx(jiwer.wer(refs, hyps))
    assert corpus_error_rate(jiwer.process_characters, refs, hyps, chunk=7) == pytest.approx(jiwer.cer(refs, hyps))
