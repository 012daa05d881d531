"""What the synthetic images say: English words, digit strings and codes.

Words come from wordfreq's English list and are split into disjoint
train/val/test vocabularies by a hash of the lowercase word, so a test word is
never drawn in training and a word keeps its split when the vocabulary grows.
Digit strings and codes are random per example; they test reading, not
vocabulary.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version

import numpy as np

from oracle_kd.data import hashed_split
from oracle_kd.tasks.scene_text.images import normalize_label

TEXT_MIX = {"words": 0.70, "digits": 0.15, "codes": 0.15}  # share of examples per kind
WORD_SPLIT_PERCENT = {"train": 80, "val": 10, "test": 10}  # of the vocabulary, by hash
PUNCTUATION = "-.,:/%"  # drawn but dropped from labels; every kept font has these glyphs
WORD_CASES = {"lower": 0.4, "title": 0.3, "upper": 0.2, "random": 0.1}
CODE_CASES = {"upper": 0.6, "lower": 0.3, "random": 0.1}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"


def word_source(vocab_size: int) -> dict:
    """The data card entry for the word list."""
    return {
        "name": "wordfreq",
        "version": version("wordfreq"),
        "call": f"wordfreq.top_n_list('en', {vocab_size}), ASCII alphabetic words only",
        "licence": "code Apache-2.0; word frequency data CC BY-SA 4.0 (see the wordfreq README)",
        "url": "https://github.com/rspeer/wordfreq",
    }


@cache
def split_vocabulary(vocab_size: int, max_length: int) -> dict[str, tuple[str, ...]]:
    """{"train": words, "val": words, "test": words}, disjoint, each in frequency order."""
    import wordfreq

    splits: dict[str, list[str]] = {name: [] for name in WORD_SPLIT_PERCENT}
    for word in wordfreq.top_n_list("en", vocab_size):
        if word.isascii() and word.isalpha() and len(word) <= max_length:
            splits[word_split(word)].append(word)
    return {name: tuple(words) for name, words in splits.items()}


def word_split(word: str) -> str:
    """The split a word belongs to, whatever its letter case."""
    return hashed_split(word.lower(), WORD_SPLIT_PERCENT)


def sample_text(rng: np.random.Generator, words: tuple[str, ...], max_length: int) -> str:
    """One string to draw, mixed case; its label has 1..max_length characters."""
    while True:  # rejection keeps every generator simple; never loops for max_length >= 8
        kind = rng.choice(list(TEXT_MIX), p=list(TEXT_MIX.values()))
        if kind == "words":
            text = _apply_case(words[rng.integers(len(words))], rng, WORD_CASES)
        elif kind == "digits":
            text = _digit_string(rng)
        else:
            text = _apply_case(_code(rng), rng, CODE_CASES)
        if 1 <= len(normalize_label(text)) <= max_length:
            return text


def _digit_string(rng: np.random.Generator) -> str:
    """Numbers as they appear on signs and receipts: plain, years, prices, phones, times."""
    form = rng.integers(7)
    if form == 0:
        return str(rng.integers(1900, 2040))  # year
    if form == 1:
        return f"{rng.integers(0, 1000)}.{_chars(rng, _DIGITS, 2)}"  # price
    if form == 2:
        return f"{rng.integers(1, 100)},{_chars(rng, _DIGITS, 3)}"  # thousands
    if form == 3:
        return f"{_chars(rng, _DIGITS, 3)}-{_chars(rng, _DIGITS, 4)}"  # phone
    if form == 4:
        return f"{rng.integers(0, 24)}:{_chars(rng, _DIGITS, 2)}"  # time
    if form == 5:
        return f"{rng.integers(1, 100)}%"
    return _chars(rng, _DIGITS, int(rng.integers(1, 9)))  # 1-8 random digits, leading zeros allowed


def _code(rng: np.random.Generator) -> str:
    """Alphanumeric codes: 'a7x3k', 'b12', 'kx-204' (cased later)."""
    n_letters, n_digits = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    form = rng.integers(3)
    if form == 0:
        return _chars(rng, _LETTERS + _DIGITS, int(rng.integers(2, 9)))
    if form == 1:
        return _chars(rng, _LETTERS, n_letters) + _chars(rng, _DIGITS, n_digits)
    return f"{_chars(rng, _LETTERS, n_letters)}-{_chars(rng, _DIGITS, n_digits + 1)}"


def _apply_case(text: str, rng: np.random.Generator, cases: dict[str, float]) -> str:
    case = rng.choice(list(cases), p=list(cases.values()))
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    if case == "title":
        return text[:1].upper() + text[1:].lower()
    flips = rng.random(len(text)) < 0.5
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(text, flips))


def _chars(rng: np.random.Generator, alphabet: str, n: int) -> str:
    return "".join(alphabet[k] for k in rng.integers(len(alphabet), size=n))
