"""Test-set decontamination: a planted copy of a benchmark item is caught in every form it is likely to take,
and the things every medical text shares (stock exam phrases, short options) are not taken for copies."""

import dataclasses

import pytest

from mmed_helpers.core.config import load_profile
from mmed_helpers.core.corpus import load_corpus
from mmed_helpers.core.decontam import (
    MIN_WHOLE,
    NGRAM,
    BenchmarkIndex,
    ContaminationReport,
    benchmark_texts,
    corpus_overlap,
    ngrams,
    split_contaminated,
    weight,
    words,
)
from mmed_helpers.steps.benchmarks import decontamination_index, load_profile_benchmarks
from mmed_helpers.steps.generate import load_seeds, record_texts

CFG = load_profile("smoke", {"languages": ["en", "zh", "ja", "fr", "ru", "es"]})


@pytest.fixture(scope="module")
def bundled():
    items, failed = load_profile_benchmarks(CFG.evaluation, CFG.languages, offline=True)
    assert not failed, failed
    return items


@pytest.fixture(scope="module")
def index(bundled):
    return BenchmarkIndex.build(benchmark_texts(bundled))


def test_the_index_covers_every_bundled_benchmark_and_language(bundled, index):
    assert set(index.items) == set(CFG.evaluation.benchmarks)
    assert sum(index.items.values()) == len({(it.benchmark, it.id) for it in bundled})
    assert {it.lang for it in bundled if it.benchmark == "mmedbench"} == set(CFG.languages)
    assert decontamination_index(CFG).items == index.items
    assert decontamination_index(load_profile("smoke", {"datagen.decontamination_ngram": 0})) is None


def test_every_bundled_benchmark_item_is_found_in_a_text_that_quotes_it(bundled, index):
    """Each item, its question copied into a longer passage with other case and punctuation, is found: by its
    13-grams, or (a short question) whole. None is missed, in any language, but the few questions too short to
    be told from ordinary text (under MIN_WHOLE words)."""
    missed, tiny = [], [it for it in bundled if weight(words(it.question)) < MIN_WHOLE]
    assert len(tiny) <= 2, tiny
    for it in (it for it in bundled if it not in tiny):
        quoted = f"Study note. {it.question.upper().replace(',', ' ;')} See the guideline."
        if (it.benchmark, it.id) not in index.hits(quoted):
            missed.append((it.benchmark, it.lang, it.id, it.question[:60]))
    short = [it for it in bundled if len(ngrams(words(it.question), NGRAM)) == 0]
    assert not missed, missed
    assert short, "no bundled question is shorter than an n-gram: the whole-question match is untested"


def test_a_question_padded_with_its_options_still_hits_only_its_own_item(bundled, index):
    it = next(i for i in bundled if i.benchmark == "medqa")
    text = it.question + " " + " ".join(it.options)
    assert {b for b, _ in index.hits(text)} == {"medqa"} and (it.benchmark, it.id) in index.hits(text)


def test_shared_phrasing_is_not_contamination(index):
    """What any text on the subject says (a stock exam stem, a short option, a sentence about the topic of a
    bundled question) hits nothing."""
    clean = [
        "Which of the following is the most likely diagnosis?",
        "最も考えられる疾患はどれか。",
        "以下哪项是最可能的诊断？",
        "Hypertrophic cardiomyopathy is the commonest cause of sudden cardiac death in young athletes.",
        "insuffisance cardiaque congestive",
    ]
    assert [index.hits(t) for t in clean] == [set()] * len(clean)


def test_bundled_corpus_and_seeds_do_not_overlap_the_bundled_benchmarks(index):
    """The course's own training text was written apart from its evaluation items; if a passage or seed ever
    copies one, this names it."""
    overlap = corpus_overlap((p.text for p in load_corpus(CFG.languages)), index)
    assert all(row["in_corpus"] == 0 for row in overlap.values()), overlap
    for kind in ("ift", "mc"):
        seeds = load_seeds(kind, CFG.languages)
        report = ContaminationReport()
        clean, dirty = split_contaminated(seeds, record_texts, index, report)
        assert not dirty and len(clean) == len(seeds), report.to_dict()


def test_the_report_counts_removed_items_per_benchmark_and_names_the_items(bundled, index):
    medqa = next(i for i in bundled if i.benchmark == "medqa")
    zh = next(i for i in bundled if i.benchmark == "mmedbench" and i.lang == "zh")
    seeds = load_seeds("ift", ["en", "zh"])
    planted = [
        dataclasses.replace(seeds[0], id="copy-en", question=medqa.question),
        dataclasses.replace(seeds[-1], id="copy-zh", answer="解析：" + zh.question),
    ]
    report = ContaminationReport()
    clean, dirty = split_contaminated([*seeds, *planted], record_texts, index, report)
    assert [r.id for r, _ in dirty] == ["copy-en", "copy-zh"] and len(clean) == len(seeds)
    d = report.to_dict()
    assert d["removed"] == {"medqa": 1, "mmedbench": 1}
    assert d["hit_items"] == {"medqa": [medqa.id], "mmedbench": [zh.id]}
    assert d["benchmark_items"] == index.items and d["ngram"] == NGRAM
    overlap = corpus_overlap([medqa.question], index)
    assert overlap["medqa"]["in_corpus"] == 1 and overlap["medqa"]["share"] == 1 / index.items["medqa"]
