"""The synthetic scene-text cache: contract, determinism, splits without leakage, character spans."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oracle_kd.tasks.scene_text import render
from oracle_kd.tasks.scene_text.images import CHARSET, IMAGE_HEIGHT, IMAGE_WIDTH, normalize_label
from oracle_kd.tasks.scene_text.render import (
    RenderConfig,
    available_fonts,
    render_dataset,
    render_word,
    split_fonts,
)
from oracle_kd.tasks.scene_text.words import sample_text, split_vocabulary, word_split

SPLITS = ("train", "val", "test")
TINY = RenderConfig(n_train=40, n_val=12, n_test=12, seed=3, max_label_length=10)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return render_dataset(TINY, tmp_path_factory.mktemp("cache"), workers=1, progress=False)


def load(cache: Path, split: str):
    images = np.load(cache / f"{split}_images.npy", mmap_mode="r")
    spans = np.load(cache / f"{split}_spans.npy", mmap_mode="r")
    texts = json.loads((cache / f"{split}_texts.json").read_text())
    fonts = json.loads((cache / f"{split}_fonts.json").read_text())
    return images, spans, texts, fonts


def test_cache_files_follow_the_contract(cache):
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["counts"] == {"train": 40, "val": 12, "test": 12}
    for split in SPLITS:
        images, spans, texts, fonts = load(cache, split)
        n = TINY.count(split)
        assert images.shape == (n, IMAGE_HEIGHT, IMAGE_WIDTH) and images.dtype == np.uint8
        assert spans.shape == (n, TINY.max_label_length, 2) and spans.dtype == np.float32
        assert len(texts) == len(fonts) == n
        for text, row in zip(texts, spans):
            length = len(normalize_label(text))
            assert (row[length:] == -1).all() and (row[:length] >= 0).all()


def test_same_config_gives_identical_bytes_whatever_the_worker_count(cache, tmp_path):
    again = render_dataset(TINY, tmp_path / "two_workers", workers=2, progress=False)
    for name in sorted(p.name for p in cache.iterdir()):
        assert (cache / name).read_bytes() == (again / name).read_bytes(), name


def test_existing_cache_is_reused_and_a_new_config_re_renders(tmp_path):
    config = RenderConfig(n_train=3, n_val=2, n_test=2)
    render_dataset(config, tmp_path, workers=1, progress=False)
    stamp = (tmp_path / "train_images.npy").stat().st_mtime_ns
    render_dataset(config, tmp_path, workers=1, progress=False)
    assert (tmp_path / "train_images.npy").stat().st_mtime_ns == stamp
    render_dataset(RenderConfig(n_train=5, n_val=2, n_test=2), tmp_path, workers=1, progress=False)
    assert np.load(tmp_path / "train_images.npy").shape[0] == 5


def test_labels_are_in_charset_and_within_length(cache):
    for split in SPLITS:
        for text in load(cache, split)[2]:
            label = normalize_label(text)
            assert 1 <= len(label) <= TINY.max_label_length
            assert set(label) <= set(CHARSET)


def test_test_fonts_are_held_out():
    fonts = split_fonts(available_fonts())
    assert fonts["test"] and fonts["train"] and fonts["val"]
    assert not set(fonts["test"]) & (set(fonts["train"]) | set(fonts["val"]))


def test_cache_uses_held_out_fonts_only_for_test(cache):
    used = {split: set(load(cache, split)[3]) for split in SPLITS}
    assert not used["test"] & (used["train"] | used["val"])


def test_word_vocabularies_are_disjoint():
    vocab = split_vocabulary(TINY.vocab_size, TINY.max_label_length)
    train, val, test = (set(vocab[s]) for s in SPLITS)
    assert len(train) > 5 * len(test) > 0 and len(train) > 5 * len(val) > 0
    assert not train & val and not train & test and not val & test


def test_rendered_words_come_from_their_own_split(cache):
    vocab = split_vocabulary(TINY.vocab_size, TINY.max_label_length)
    every_word = set().union(*vocab.values())
    for split in SPLITS:
        words = [t.lower() for t in load(cache, split)[2] if t.lower() in every_word]
        assert words, "no dictionary words rendered"
        assert all(word_split(w) == split for w in words)


def test_text_mix_has_words_digits_and_codes():
    rng = np.random.default_rng(0)
    words = split_vocabulary(TINY.vocab_size, 14)["train"]
    texts = [sample_text(rng, words, 14) for _ in range(400)]
    digits = sum(normalize_label(t).isdigit() for t in texts)
    alpha = sum(t.isalpha() for t in texts)
    assert 0.05 < digits / 400 < 0.3 and 0.6 < alpha / 400 < 0.85
    assert any(t.isupper() for t in texts) and any(t.islower() for t in texts) and any(t.istitle() for t in texts)


def test_spans_are_ordered_and_inside_the_image(cache):
    for split in SPLITS:
        _, spans, texts, _ = load(cache, split)
        for text, row in zip(texts, spans):
            row = row[: len(normalize_label(text))]
            assert (row[:, 0] < row[:, 1]).all()
            assert (row >= 0).all() and (row <= IMAGE_WIDTH).all()
            assert (np.diff(row.mean(1)) > 0).all(), text  # left to right


def test_spans_enclose_exactly_the_ink(monkeypatch):
    """With black-on-white painting, every inked column lies in some span and every span has ink.

    Geometry (rotation, shear, perspective, crop, stretch) stays on, so this checks
    that the character boxes go through the same transforms as the pixels.
    """
    monkeypatch.setattr(render, "_paint", lambda mask, rng, config: Image.fromarray(255 - np.asarray(mask)))
    fonts = available_fonts()
    words = split_vocabulary(TINY.vocab_size, 14)["train"]
    for i in range(60):
        rng = np.random.default_rng([7, i])
        text = "".join(c for c in sample_text(rng, words, 14) if c.isalnum())  # punctuation has no span
        image, spans = render_word(text, fonts[i % len(fonts)], rng)
        assert spans.shape == (len(text), 2)
        inked = (image < 200).any(0)
        covered = np.zeros(IMAGE_WIDTH, bool)
        for x0, x1 in spans:
            covered[max(0, int(x0) - 1) : int(np.ceil(x1)) + 1] = True  # 1 px for resampling blur
            assert inked[int(x0) : int(np.ceil(x1))].any(), text
        assert not (inked & ~covered).any(), text


def test_spans_mark_where_the_text_is_on_real_renders(cache):
    """On fully augmented images, columns inside spans vary more (strokes) than columns away from them."""
    images, spans, texts, _ = load(cache, "train")
    outcomes = []
    for image, row, text in zip(images, spans, texts):
        inside, near = np.zeros(IMAGE_WIDTH, bool), np.zeros(IMAGE_WIDTH, bool)
        for x0, x1 in row[: len(normalize_label(text))]:
            inside[int(np.ceil(x0)) : int(x1)] = True
            near[max(0, int(x0) - 3) : int(np.ceil(x1)) + 3] = True  # skip edges and punctuation nearby
        if inside.any() and (~near).sum() >= 3:
            spread = image.astype(np.float32).std(axis=0)  # per column: strokes vs plain background
            outcomes.append(spread[inside].mean() > spread[~near].mean())
    assert len(outcomes) >= 20 and np.mean(outcomes) >= 0.9
