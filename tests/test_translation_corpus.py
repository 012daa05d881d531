"""The translation corpus: catalog readers and cleaning, on tiny archives made here (no network)."""

import json
import zipfile
from collections import Counter

import pytest

from oracle_kd.io import InputError
from oracle_kd.tasks.translation import corpus
from oracle_kd.tasks.translation.corpus import Catalog, clean_pair, clean_pairs, split_of


def test_placeholders_become_numbered_tokens_in_source_order():
    pair, problem = clean_pair("Delete %(count)s files from {folder}?", "{folder}: %(count)s Dateien löschen?")
    assert problem is None
    assert pair == ("Delete <1> files from <2>?", "<2>: <1> Dateien löschen?")


def test_html_tags_and_jinja_are_placeholders_too():
    pair, _ = clean_pair('Read <a href="https://x.org">the docs</a> of {{ name }}',
                         'Lies <a href="https://x.org">die Doku</a> von {{ name }}')
    assert pair == ("Read <1>the docs<2> of <3>", "Lies <1>die Doku<2> von <3>")


@pytest.mark.parametrize("source, target, reason", [
    ("  ", "Leer", "empty"),
    ("Save", "", "empty"),
    ("Delete %s", "Löschen", "placeholder_mismatch"),  # the target lost the placeholder
    ("{a} {b}", "{a} {a}", "placeholder_mismatch"),  # same names, other counts
    ("{name}: %s", "%s: {name}", "no_words"),  # nothing to translate but placeholders
    ("Status", "Status", "identical"),
    (" ".join(["word"] * 41), "Wort", "too_long"),
])
def test_a_pair_is_dropped_with_its_reason(source, target, reason):
    assert clean_pair(source, target) == (None, reason)


def test_whitespace_is_collapsed():
    assert clean_pair(" Save\n  all ", "Alles\tspeichern ") == (("Save all", "Alles speichern"), None)


def test_one_target_per_source_the_most_frequent_then_the_first():
    raw = [("Close", "Schließen", "a"), ("Close", "Zumachen", "b"), ("Close", "Zumachen", "c"),
           ("Open", "Öffnen", "b"), ("Open", "Aufmachen", "a"), ("Status", "Status", "a")]
    pairs, counts, kept = clean_pairs(raw)
    assert pairs == [("Close", "Zumachen"), ("Open", "Öffnen")]  # Open: a tie, the first seen wins
    assert counts == Counter({"duplicate_source": 3, "identical": 1})
    assert kept == Counter({"b": 2})


def test_sources_differing_in_case_share_a_split():
    assert split_of("Save changes") == split_of("SAVE CHANGES") == split_of("save changes")
    splits = Counter(split_of(f"sentence {i}") for i in range(4000))
    assert 0.87 < splits["train"] / 4000 < 0.93 and splits["val"] > 120 and splits["test"] > 120


def _wheel(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_json_catalogs_are_paired_by_file_group_and_key_path(tmp_path):
    en = {"config": {"step": {"user": {"title": "Connect", "description": "Enter the host"}}}, "only_en": "Hi"}
    de = {"config": {"step": {"user": {"title": "Verbinden", "description": "Host eingeben"}}}}
    archive = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {
        "pkg/a/translations/en.json": json.dumps(en), "pkg/a/translations/de.json": json.dumps(de),
        "pkg/b/translations/en.json": json.dumps({"x": "Lonely"}),  # no German file beside it
    })
    catalog = Catalog("pkg", "1.0", "MIT", "json", english=r"(?P<group>pkg/\w+/translations/)en\.json",
                      german=r"(?P<group>pkg/\w+/translations/)de\.json")
    pairs, dropped = catalog.raw_pairs(archive)
    assert sorted(pairs) == [("Connect", "Verbinden"), ("Enter the host", "Host eingeben")]
    assert dropped == Counter({"untranslated": 1, "no_german_file": 1})


def test_po_catalogs_drop_fuzzy_obsolete_plural_and_untranslated_entries(tmp_path):
    po = "\n".join([
        'msgid ""', 'msgstr ""', '"Content-Type: text/plain; charset=UTF-8\\n"', "",
        'msgid "Save"', 'msgstr "Speichern"', "",
        "#, fuzzy", 'msgid "Load"', 'msgstr "Laden?"', "",
        'msgid "Quit"', 'msgstr ""', "",
        'msgid "%(n)s file"', 'msgid_plural "%(n)s files"', 'msgstr[0] "%(n)s Datei"', 'msgstr[1] "%(n)s Dateien"', "",
        '#~ msgid "Old"', '#~ msgstr "Alt"', "",
    ])
    archive = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/de/messages.po": po})
    pairs, dropped = Catalog("pkg", "1.0", "MIT", "po", german=r"pkg/de/messages\.po").raw_pairs(archive)
    assert pairs == [("Save", "Speichern")]
    assert dropped == Counter({"fuzzy": 1, "untranslated": 1, "plural": 1, "obsolete": 1})


def test_an_archive_without_its_catalog_is_an_input_error(tmp_path):
    archive = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"README": "x"})
    with pytest.raises(InputError, match="pkg-1.0-py3-none-any.whl has no German catalog"):
        Catalog("pkg", "1.0", "MIT", "po", german=r"pkg/de/messages\.po").raw_pairs(archive)


def test_the_card_counts_what_each_catalog_gave(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "fetch_archive", lambda catalog, cache, purpose: cache / catalog.package)
    fake = {"a": ([("Save", "Speichern"), ("Status", "Status")], Counter({"fuzzy": 2})),
            "b": ([("Save", "Sichern"), ("Open", "Öffnen")], Counter())}
    monkeypatch.setattr(Catalog, "raw_pairs", lambda self, archive: fake[self.package])
    built = corpus.build_corpus(tmp_path, [Catalog("a", "1", "MIT", "po", "x"), Catalog("b", "2", "BSD", "po", "x")])
    assert [(c["package"], c["entries_read"], c["pairs_kept"]) for c in built.card["catalogs"]] == [("a", 4, 1), ("b", 2, 1)]
    assert built.card["cleaning"] == {"identical": 1, "duplicate_source": 1}
    assert sum(built.card["pairs"].values()) == 2
