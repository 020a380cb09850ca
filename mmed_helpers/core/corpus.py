"""The bundled corpus of unstructured medical passages (written for this course, six languages).

Each language is one JSON Lines file ``mmed_helpers/data/corpus/<lang>.jsonl``; a line holds ``id``, ``lang``,
``specialty`` (an English label), ``title`` and ``text`` (paragraphs separated by a blank line)::

    >>> from mmed_helpers.core.corpus import load_corpus
    >>> passages = load_corpus(["en"])
    >>> passages[0].id, len(passages[0].paragraphs) >= 3
    ('en-001', True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .jsonl import read_jsonl
from .languages import LANGUAGES
from .layout import CORPUS_DIR

_FIELDS = ("id", "lang", "specialty", "title", "text")


@dataclass(frozen=True)
class Passage:
    """One unstructured medical passage."""

    id: str
    lang: str
    specialty: str
    title: str
    text: str
    source: str = ""
    """Where it came from, for your own corpus: a file (``notes/a.md``), a row (``pubmed.jsonl@12``)."""

    @property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in self.text.split("\n\n") if p.strip()]


class CorpusError(ValueError):
    """A corpus file is missing or holds a malformed record (the message names file and line)."""


def corpus_path(lang: str, corpus_dir: Path = CORPUS_DIR) -> Path:
    return Path(corpus_dir) / f"{lang}.jsonl"


def load_corpus(languages: Iterable[str] | None = None, corpus_dir: Path | str = CORPUS_DIR) -> list[Passage]:
    """Load the passages of ``languages`` (default: all six), in file order, validating every record."""
    langs = list(LANGUAGES if languages is None else languages)
    passages: list[Passage] = []
    seen: set[str] = set()
    for lang in langs:
        path = corpus_path(lang, Path(corpus_dir))
        if not path.is_file():
            raise CorpusError(f"no corpus file for language {lang!r}: expected {path}")
        for line in read_jsonl(path):
            where, rec = line.where, line.record
            if line.error:
                raise CorpusError(f"{where}: {line.error}")
            if not isinstance(rec, dict):
                raise CorpusError(f"{where}: not a JSON object")
            missing = [f for f in _FIELDS if not isinstance(rec.get(f), str) or not rec[f].strip()]
            if missing:
                raise CorpusError(f"{where}: missing or empty field(s) {missing}")
            if rec["lang"] != lang:
                raise CorpusError(f"{where}: record language {rec['lang']!r} in the {lang!r} file")
            if rec["id"] in seen:
                raise CorpusError(f"{where}: duplicate id {rec['id']!r}")
            seen.add(rec["id"])
            passages.append(Passage(**{f: rec[f] for f in _FIELDS}))
    return passages


def select_passages(passages: Sequence[Passage], per_language: int) -> list[Passage]:
    """The first ``per_language`` passages of each language (0 = all), in corpus order."""
    if per_language <= 0:
        return list(passages)
    seen: Counter = Counter()
    out = []
    for p in passages:
        if seen[p.lang] < per_language:
            seen[p.lang] += 1
            out.append(p)
    return out


def corpus_summary(passages: Iterable[Passage]) -> dict[str, dict[str, int]]:
    """Per language: number of passages, paragraphs and characters (for tables and plots)."""
    out: dict[str, Counter] = {}
    for p in passages:
        c = out.setdefault(p.lang, Counter())
        c["passages"] += 1
        c["paragraphs"] += len(p.paragraphs)
        c["characters"] += len(p.text)
    return {lang: dict(c) for lang, c in out.items()}
