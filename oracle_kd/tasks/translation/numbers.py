"""An offline toy pair for tests and smoke runs: English number words -> German number words.

Not natural text, but it has what makes translation hard for a CTC model: German
writes a number below a million as one word and says the units before the tens
(345 678: "three hundred forty five thousand six hundred seventy eight" ->
"dreihundertfünfundvierzigtausendsechshundertachtundsiebzig"), so the order changes.
"""

from __future__ import annotations

import numpy as np

LIMIT = 1_000_000  # numbers 0 .. LIMIT - 1

_EN_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
           "sixteen seventeen eighteen nineteen".split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_DE_ONES = "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn " \
           "sechzehn siebzehn achtzehn neunzehn".split()
_DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()


def english(n: int) -> str:
    """American number words without "and" or hyphens: 105 -> "one hundred five"."""
    if n < 20:
        return _EN_ONES[n]
    if n < 100:
        return _EN_TENS[n // 10] + ("" if n % 10 == 0 else " " + _EN_ONES[n % 10])
    if n < 1000:
        return f"{_EN_ONES[n // 100]} hundred" + ("" if n % 100 == 0 else " " + english(n % 100))
    return f"{english(n // 1000)} thousand" + ("" if n % 1000 == 0 else " " + english(n % 1000))


def german(n: int) -> str:
    """German number words, one word below a million: 21 -> "einundzwanzig", 1001 -> "eintausendeins"."""
    return _german(n, final=True) if n else "null"


def _german(n: int, final: bool) -> str:
    """final: the number ends the word, so 1 is "eins"; inside a word ("einhundert") it is "ein"."""
    if n == 0:
        return ""
    if n == 1:
        return "eins" if final else "ein"
    if n < 20:
        return _DE_ONES[n]
    if n < 100:
        ones = n % 10
        return ("" if ones == 0 else ("ein" if ones == 1 else _DE_ONES[ones]) + "und") + _DE_TENS[n // 10]
    if n < 1000:
        return _german(n // 100, final=False) + "hundert" + _german(n % 100, final)
    return _german(n // 1000, final=False) + "tausend" + _german(n % 1000, final)


def number_splits(counts: dict[str, int], seed: int) -> dict[str, list[tuple[str, str]]]:
    """Disjoint splits of distinct numbers drawn with the seed: {"train": [(english, german), ...], ...}."""
    total = sum(counts.values())
    if min(counts.values()) < 1 or total > LIMIT:
        raise ValueError(f"number pairs need 1 .. {LIMIT} per split in all, got {counts}")
    picked = np.random.default_rng(seed).choice(LIMIT, size=total, replace=False).tolist()
    splits, start = {}, 0
    for split, n in counts.items():
        splits[split] = [(english(k), german(k)) for k in picked[start:start + n]]
        start += n
    return splits
