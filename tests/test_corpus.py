import json
import re

import pytest

from mmed_helpers.core.corpus import CorpusError, corpus_summary, load_corpus
from mmed_helpers.core.languages import LANGUAGES

SCRIPTS = {
    "zh": re.compile(r"[\u4e00-\u9fff]"),
    "ja": re.compile(r"[\u3040-\u30ff]"),  # hiragana + katakana
    "ru": re.compile(r"[\u0400-\u04ff]"),
}


def test_counts_per_language():
    passages = load_corpus()
    counts = {lang: sum(p.lang == lang for p in passages) for lang in LANGUAGES}
    assert counts["en"] >= 30
    assert all(counts[lang] >= 5 for lang in ("zh", "ja", "fr", "ru", "es"))


def test_english_covers_many_specialties():
    specialties = {p.specialty for p in load_corpus(["en"])}
    assert len(specialties) >= 20


def test_every_passage_has_several_substantial_paragraphs():
    for p in load_corpus():
        assert 3 <= len(p.paragraphs) <= 6, p.id
        assert len(p.text) >= (400 if p.lang in ("zh", "ja") else 1000), p.id
        assert p.id.startswith(p.lang + "-")


def test_text_is_in_its_language_script():
    for p in load_corpus():
        if p.lang in SCRIPTS:
            share = len(SCRIPTS[p.lang].findall(p.text)) / len(p.text)
            assert share > 0.3, (p.id, share)
        else:
            assert not any(SCRIPTS[s].search(p.text) for s in SCRIPTS), p.id


def test_ids_are_unique():
    ids = [p.id for p in load_corpus()]
    assert len(ids) == len(set(ids))


def test_summary_counts():
    summary = corpus_summary(load_corpus(["fr", "zh"]))
    assert set(summary) == {"fr", "zh"}
    assert summary["fr"]["passages"] >= 5 and summary["fr"]["paragraphs"] >= 15


def _write(tmp_path, lang, lines):
    (tmp_path / f"{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_malformed_records_name_file_and_line(tmp_path):
    good = {"id": "en-1", "lang": "en", "specialty": "x", "title": "t", "text": "a\n\nb\n\nc"}
    _write(tmp_path, "en", [json.dumps(good), "{not json"])
    with pytest.raises(CorpusError, match=r"en\.jsonl:2: not valid JSON"):
        load_corpus(["en"], tmp_path)
    _write(tmp_path, "en", [json.dumps({**good, "title": ""})])
    with pytest.raises(CorpusError, match=r"en\.jsonl:1: missing or empty field\(s\) \['title'\]"):
        load_corpus(["en"], tmp_path)
    _write(tmp_path, "en", [json.dumps({**good, "lang": "fr"})])
    with pytest.raises(CorpusError, match="record language 'fr' in the 'en' file"):
        load_corpus(["en"], tmp_path)
    _write(tmp_path, "en", [json.dumps(good), json.dumps(good)])
    with pytest.raises(CorpusError, match="duplicate id 'en-1'"):
        load_corpus(["en"], tmp_path)
    with pytest.raises(CorpusError, match="no corpus file for language 'de'"):
        load_corpus(["de"], tmp_path)
