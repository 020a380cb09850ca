"""Test-set decontamination: n-gram overlap between training text and the evaluation benchmarks' items.

The method is lm-evaluation-harness's (its ``decontamination`` module, after GPT-3's appendix C): text is
normalised (Unicode NFKC, case-folded, punctuation removed, whitespace collapsed), cut into word n-grams with
``n = 13``, and a training item that shares any n-gram with a benchmark item is contaminated by it. Two course
choices, for the six languages and for short items:

* Chinese and Japanese have no spaces: each of their characters is a word of half weight, and an n-gram is the
  shortest run of words from a position that weighs ``n`` (13 words, or 26 Chinese characters: at 13
  characters the stock exam phrase 最も考えられる疾患はどれか alone matched two bundled MMedBench items).
* A benchmark *question* shorter than that, of at least :data:`MIN_WHOLE` words, is matched whole, so a short
  question copied as it is is still found; options are matched only by n-grams (a three-word option such as
  "insuffisance cardiaque congestive" is a phrase every text on the subject uses).

A benchmark item's text is its question, then its options (and, for PubMedQA, its abstract); each is indexed on
its own, so that the 13 words joining a question to its first option are no n-gram either side has::

    >>> index = BenchmarkIndex.build([("medqa", "q1", "A 45-year-old man has crushing chest pain radiating to "
    ...                                 "the left arm and jaw for two hours; which test is most urgent?")])
    >>> index.hits("Exam item: a 45-year-old man has crushing chest pain, radiating to the left arm and jaw!")
    {('medqa', 'q1')}
    >>> index.hits("Crushing chest pain needs an ECG within ten minutes.")
    set()
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .quality import _CJK

NGRAM = 13
"""Words per n-gram: lm-evaluation-harness's and GPT-3's default."""
MIN_WHOLE = 8
"""A benchmark question of at least this many words (and fewer than an n-gram) is matched whole."""
CJK_WEIGHT = 0.5
"""What a Chinese or Japanese character weighs against a word."""

_CJK_CHAR = _CJK.pattern  # one character of Chinese or Japanese script, as the filters define it
_TOKEN = re.compile(rf"{_CJK_CHAR}|(?:(?!{_CJK_CHAR})[^\W_])+", re.UNICODE)


def words(text: str) -> list[str]:
    """The normalised words of ``text``: NFKC, case-folded, punctuation dropped; a Chinese or Japanese
    character is a word of its own.

    >>> words("Type-2 Diabetes, HbA1c ≥ 6.5 %")
    ['type', '2', 'diabetes', 'hba1c', '6', '5']
    >>> words("乙型肝炎。Down症候群")
    ['乙', '型', '肝', '炎', 'down', '症', '候', '群']
    """
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def _weight(token: str) -> float:
    return CJK_WEIGHT if len(token) == 1 and _CJK.match(token) else 1.0


def weight(tokens: Sequence[str]) -> float:
    """How many words ``tokens`` count for (a Chinese or Japanese character: :data:`CJK_WEIGHT`)."""
    return sum(_weight(t) for t in tokens)


def ngrams(tokens: Sequence[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    """From each position, the shortest run of ``tokens`` that weighs ``n`` words (``n`` words; ``2n``
    Chinese or Japanese characters). The run from a position depends only on what follows it, so the same
    text gives the same n-grams wherever it stands.

    >>> sorted(ngrams(["a", "b", "c"], 2))
    [('a', 'b'), ('b', 'c')]
    >>> len(ngrams(list("最も考えられる疾患はどれか"), 13)), len(ngrams(words("最も考えられる疾患はどれか。" * 2), 13))
    (0, 1)
    """
    weights = [_weight(t) for t in tokens]
    out = set()
    end, total = 0, 0.0
    for start in range(len(tokens)):
        while end < len(tokens) and total < n:
            total += weights[end]
            end += 1
        if total < n:
            break
        out.add(tuple(tokens[start:end]))
        total -= weights[start]
    return out


@dataclass
class BenchmarkIndex:
    """The n-grams of benchmark texts, each pointing at the ``(benchmark, item id)`` it comes from; short
    questions (fewer than ``n`` words) are kept whole and matched as contiguous runs.

    The n-grams are kept as their 64-bit hashes in one sorted array (with the owning item beside each), so a
    full-size benchmark suite (MedQA, MedMCQA, PubMedQA and MMedBench: some two million n-grams) takes tens of
    megabytes, not the gigabyte a Python set of tuples would."""

    n: int = NGRAM
    keys: list[tuple[str, str]] = field(default_factory=list)
    """``(benchmark, item id)`` by item number."""
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    owners: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    short: dict[tuple[str, ...], set[int]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    """Items indexed per benchmark."""

    @classmethod
    def build(cls, texts: Iterable[tuple], n: int = NGRAM) -> BenchmarkIndex:
        """From ``(benchmark, item id, text)`` or ``(benchmark, item id, text, whole)`` tuples (several texts
        per item are fine); ``whole`` (default true) lets a text shorter than an n-gram, of at least
        :data:`MIN_WHOLE` words, be matched whole."""
        index = cls(n=n)
        number: dict[tuple[str, str], int] = {}
        hashes: list[int] = []
        owners: list[int] = []
        for bench, item_id, text, *whole in texts:
            key = (bench, item_id)
            if key not in number:
                number[key] = len(index.keys)
                index.keys.append(key)
                index.items[bench] = index.items.get(bench, 0) + 1
            tokens = words(text)
            if (whole[0] if whole else True) and MIN_WHOLE <= weight(tokens) < n:
                index.short.setdefault(tuple(tokens), set()).add(number[key])
            grams = {hash(g) for g in ngrams(tokens, n)}
            hashes += grams
            owners += [number[key]] * len(grams)
        order = np.argsort(np.array(hashes, np.int64), kind="stable")
        index.hashes = np.array(hashes, np.int64)[order]
        index.owners = np.array(owners, np.int32)[order]
        return index

    def hits(self, text: str) -> set[tuple[str, str]]:
        """The benchmark items ``text`` shares an n-gram with (or contains whole, for short ones)."""
        tokens = words(text)
        found: set[int] = set()
        query = np.array([hash(g) for g in ngrams(tokens, self.n)], np.int64)
        if len(query) and len(self.hashes):
            lo = np.searchsorted(self.hashes, query, "left")
            hi = np.searchsorted(self.hashes, query, "right")
            for a, b in zip(lo[hi > lo], hi[hi > lo], strict=True):
                found.update(self.owners[a:b].tolist())
        if self.short:
            for k in {len(s) for s in self.short}:
                for i in range(len(tokens) - k + 1):
                    found |= self.short.get(tuple(tokens[i : i + k]), set())
        return {self.keys[i] for i in found}


def benchmark_texts(items) -> list[tuple[str, str, str, bool]]:
    """``(benchmark, item id, text, whole)`` for evaluation items
    (:class:`~mmed_helpers.steps.benchmarks.EvalItem`): the question (which may be matched whole), each option
    and, where there is one, the context, as separate texts."""
    out = []
    for it in items:
        out.append((it.benchmark, it.id, it.question, True))
        out += [(it.benchmark, it.id, o, False) for o in it.options]
        if it.context:
            out.append((it.benchmark, it.id, it.context, False))
    return out


@dataclass
class ContaminationReport:
    """Per benchmark: training items removed for sharing an n-gram with it, and which of its items were hit."""

    n: int = NGRAM
    benchmark_items: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    hit_items: dict[str, list[str]] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "ngram": self.n,
            "benchmark_items": dict(self.benchmark_items),
            "removed": dict(self.removed),
            "hit_items": {k: sorted(v) for k, v in self.hit_items.items()},
            "examples": self.examples[:10],
        }


def split_contaminated(records: Sequence, texts_of, index: BenchmarkIndex, report: ContaminationReport):
    """``(clean, contaminated)``: the ``records`` whose texts (``texts_of(record)``, a list of strings) share no
    n-gram with the index, and ``(record, ["benchmark:item id", ...])`` for the others. ``report`` counts each
    removed record once per benchmark it hits (a record's ``id`` names it in the examples)."""
    report.benchmark_items = dict(index.items)
    clean, dirty = [], []
    for rec in records:
        found: set[tuple[str, str]] = set()
        for text in texts_of(rec):
            found |= index.hits(text)
        if not found:
            clean.append(rec)
            continue
        names = sorted(f"{b}:{i}" for b, i in found)
        dirty.append((rec, names))
        for bench in sorted({b for b, _ in found}):
            report.removed[bench] = report.removed.get(bench, 0) + 1
        for bench, item_id in sorted(found):
            hit = report.hit_items.setdefault(bench, [])
            if item_id not in hit:
                hit.append(item_id)
        report.examples.append({"id": getattr(rec, "id", ""), "benchmark_items": names})
    return clean, dirty


def corpus_overlap(texts: Iterable[str], index: BenchmarkIndex) -> dict[str, dict[str, float | int]]:
    """The check the other way: per benchmark, how many of its items share an n-gram with the corpus
    ``texts`` (and the share of all its indexed items)."""
    hit: dict[str, set[str]] = {}
    for text in texts:
        for bench, item_id in index.hits(text):
            hit.setdefault(bench, set()).add(item_id)
    return {
        bench: {"items": total, "in_corpus": len(hit.get(bench, ())), "share": len(hit.get(bench, ())) / total}
        for bench, total in sorted(index.items.items())
    }
