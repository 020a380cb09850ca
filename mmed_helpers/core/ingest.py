"""Your own medical corpus as passages for notebook 01: read, cut, identify, deduplicate, sample, streamed.

Sources (``datagen.corpus`` in the profile):

* **files**: ``path`` is a folder (read recursively, in sorted order), one file, or a glob. ``.txt`` and ``.md``
  files are one document each; ``.jsonl`` and ``.parquet`` files hold one document per row (``text_column``,
  and optionally ``id_column``, ``language_column``, ``title_column``); ``.pdf`` files are read page by page
  with ``pypdf``.
* **a Hugging Face dataset**: ``dataset`` is a Hub id or a local folder laid out as the Hub serves one
  (``data/train-00000-of-00001.parquet``, ``*.jsonl`` ...), read with ``datasets.load_dataset(...,
  streaming=True)``, so nothing is downloaded or held beyond the rows in flight.

Every document gets a stable id (its path relative to ``path``, ``@row`` for a row; or the id column) and keeps
where it came from (``Passage.source``); a passage's id is its document's, its number and a hash of its text
(:func:`passage_id`). Each document is cut into passages on paragraph boundaries to at most
``max_passage_tokens`` tokens of the generator's tokenizer (a longer paragraph on sentence boundaries, a longer
sentence on words); each passage's language is the language column's, or detected (the language id of the
filters); passages in other languages, too short, or duplicating an earlier one (exactly, after normalising;
near duplicates by MinHash) are skipped and counted; and ``passages_per_language`` passages per language are
chosen by a seeded sample that does not depend on the order of the files (the passages with the smallest
seeded hash of their id; of two duplicates, the one read first is kept).

Memory stays flat as the corpus grows: documents are read one at a time, a passage is kept only while it is
among its language's sample candidates (twice the quota, so that near duplicates removed at the end still
leave a full quota), and what is remembered of every passage seen is an 8-byte hash for the exact-duplicate
check. ``benchmarks/ingest.py`` measures it.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .corpus import CorpusError, Passage
from .jsonl import read_jsonl
from .quality import _CJK, _KANA, cjk_share, detect_language, find_duplicates, normalize

SUFFIXES = (".txt", ".md", ".jsonl", ".parquet", ".pdf")
"""The file types a corpus folder may hold (others are skipped and counted)."""

TokenCounter = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s+|(?<=[。！？；])")


def approximate_tokens(text: str) -> int:
    """A tokenizer-free token count: words, plus one per Chinese or Japanese character (for an endpoint whose
    tokenizer is not at hand; real subword tokenizers give somewhat more on medical terms)."""
    cjk = len(_CJK.findall(text))
    return cjk + len(_CJK.sub(" ", text).split())


def tokenizer_counter(tokenizer) -> TokenCounter:
    """Token counts from a Hugging Face tokenizer (without special tokens)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class Document:
    """One document of a corpus, before it is cut into passages."""

    id: str
    text: str
    source: str
    """Where it came from: ``path`` or ``path@row`` or ``dataset/split@row``."""
    lang: str = ""
    title: str = ""


# --------------------------------------------------------------------------- reading


def corpus_files(path: str | Path) -> list[Path]:
    """The corpus files ``path`` names (a folder, recursively; a file; a glob), in sorted order."""
    text = str(path)
    p = Path(text).expanduser()
    if any(ch in text for ch in "*?["):
        files = [Path(f) for f in glob.glob(str(p), recursive=True)]
    elif p.is_dir():
        files = [f for f in p.rglob("*")]
    elif p.is_file():
        files = [p]
    else:
        raise CorpusError(f"corpus path {text!r} does not exist")
    files = sorted(f for f in files if f.is_file() and not any(part.startswith(".") for part in f.parts[-1:]))
    found = [f for f in files if f.suffix.lower() in SUFFIXES]
    if not found:
        raise CorpusError(f"no corpus files under {text!r}: expected {', '.join(SUFFIXES)} files")
    return found


def _root(path: str | Path) -> Path:
    """What document ids are relative to: the folder, the glob's fixed part, or a file's folder."""
    text = str(Path(str(path)).expanduser())
    fixed = re.split(r"[*?\[]", text, maxsplit=1)[0]
    p = Path(fixed)
    return p if p.is_dir() and fixed == text else (p if fixed != text and p.is_dir() else p.parent)


def read_file_documents(
    path: str | Path,
    text_column: str = "text",
    id_column: str = "",
    language_column: str = "",
    title_column: str = "",
    skipped: Counter | None = None,
) -> Iterator[Document]:
    """The documents of every corpus file under ``path``, one at a time. Files with other suffixes are counted
    in ``skipped["other_file_type"]``."""
    root = _root(path)
    if skipped is not None and Path(str(path)).expanduser().is_dir():
        every = [f for f in Path(str(path)).expanduser().rglob("*") if f.is_file()]
        skipped["other_file_type"] += sum(f.suffix.lower() not in SUFFIXES for f in every)
    columns = (text_column, id_column, language_column, title_column)
    for f in corpus_files(path):
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        suffix = f.suffix.lower()
        if suffix in (".txt", ".md"):
            yield Document(rel, _read_text(f, markdown=suffix == ".md"), rel, title=_title(f))
        elif suffix == ".pdf":
            yield Document(rel, _read_pdf(f), rel, title=f.stem)
        elif suffix == ".jsonl":
            yield from _rows(_jsonl_rows(f), rel, *columns)
        else:
            yield from _rows(_parquet_rows(f, columns), rel, *columns)


def read_dataset_documents(
    dataset: str,
    config: str = "",
    split: str = "train",
    text_column: str = "text",
    id_column: str = "",
    language_column: str = "",
    title_column: str = "",
) -> Iterator[Document]:
    """The documents of a Hugging Face dataset (a Hub id or a local folder in the Hub's layout), streamed."""
    from datasets import load_dataset

    try:
        rows = load_dataset(dataset, config or None, split=split, streaming=True)
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        raise CorpusError(f"corpus dataset {dataset!r} (split {split!r}) could not be opened: {exc}") from None
    name = f"{Path(dataset).name if Path(dataset).is_dir() else dataset}/{split}"
    yield from _rows(iter(rows), name, text_column, id_column, language_column, title_column)


def _rows(
    rows: Iterator[dict[str, Any]],
    where: str,
    text_column: str,
    id_column: str,
    language_column: str,
    title_column: str,
) -> Iterator[Document]:
    for i, row in enumerate(rows):
        if text_column not in row:
            raise CorpusError(
                f"{where}: row {i} has no column {text_column!r} (it has {sorted(row)}); set datagen.corpus.text_column"
            )
        text = row[text_column]
        if not isinstance(text, str):
            raise CorpusError(f"{where}: row {i}: column {text_column!r} holds {type(text).__name__}, not text")
        doc_id = str(row[id_column]) if id_column and row.get(id_column) is not None else f"{where}@{i}"
        lang = str(row.get(language_column) or "") if language_column else ""
        title = str(row.get(title_column) or "") if title_column else ""
        yield Document(doc_id, text, f"{where}@{i}", lang, title)


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    for line in read_jsonl(path):
        if line.error or not isinstance(line.record, dict):
            raise CorpusError(f"{line.where}: {line.error or 'not a JSON object'}")
        yield line.record


def _parquet_rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    wanted = [c for c in dict.fromkeys(columns) if c and c in pf.schema_arrow.names]
    if columns[0] not in wanted:
        raise CorpusError(
            f"{path}: no column {columns[0]!r} (it has {pf.schema_arrow.names}); set datagen.corpus.text_column"
        )
    for batch in pf.iter_batches(batch_size=256, columns=wanted):
        yield from batch.to_pylist()


def _read_text(path: Path, markdown: bool) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return _strip_markdown(text) if markdown else text


def _title(path: Path) -> str:
    if path.suffix.lower() == ".md":
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            for line in fh:
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)
_FENCE = re.compile(r"^```.*?^```\s*$", re.DOTALL | re.MULTILINE)
_MD_MARKS = [
    (re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE), ""),  # heading marks (the heading stays a paragraph)
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images: their alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: their text
    (re.compile(r"(\*\*|__|\*|`)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # emphasis, inline code
    (re.compile(r"^\s*>\s?", re.MULTILINE), ""),  # block quotes
]


def _strip_markdown(text: str) -> str:
    """Markdown as the prose it holds: no front matter, code blocks, heading marks, link targets or emphasis."""
    text = _FENCE.sub("", _FRONT_MATTER.sub("", text))
    for pattern, repl in _MD_MARKS:
        text = pattern.sub(repl, text)
    return text


def _read_pdf(path: Path) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:  # pragma: no cover - pypdf is a dependency
        raise CorpusError(f"{path}: reading PDF needs pypdf (pip install pypdf)") from None
    try:
        pages = [page.extract_text() or "" for page in PdfReader(path).pages]
    except (PdfReadError, OSError, ValueError) as exc:
        raise CorpusError(f"{path}: not a readable PDF ({exc})") from None
    return "\n\n".join(pages)


# --------------------------------------------------------------------------- cutting


def paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines; a paragraph's hard line breaks become spaces (none between two
    Chinese or Japanese characters, or after a hyphen that ends a line: PDF and wrapped text break compounds
    there).

    >>> paragraphs("Give low-\\ndose aspirin\\nnow.\\n\\n肝硬化是\\n慢性肝病。")
    ['Give low-dose aspirin now.', '肝硬化是慢性肝病。']
    """
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        joined = lines[0]
        for line in lines[1:]:
            # no space between two CJK characters, nor after a line-end hyphen ("low-" + "dose": "low-dose")
            glue = _CJK.match(joined[-1]) and _CJK.match(line[0]) or (joined[-1] == "-" and joined[-2:-1].isalpha())
            joined += ("" if glue else " ") + line
        out.append(joined)
    return out


def _pieces(paragraph: str, budget: int, count: TokenCounter) -> list[str]:
    """A paragraph as pieces of at most ``budget`` tokens: whole, or by sentences, or (a sentence longer than
    the budget) by words or characters."""
    if count(paragraph) <= budget:
        return [paragraph]
    out: list[str] = []
    for sentence in (s for s in _SENTENCE_END.split(paragraph) if s.strip()):
        if count(sentence) <= budget:
            out.append(sentence.strip())
            continue
        units = sentence.split() if " " in sentence.strip() else list(sentence)
        sep = " " if " " in sentence.strip() else ""
        piece: list[str] = []
        for unit in units:
            if piece and count(sep.join([*piece, unit])) > budget:
                out.append(sep.join(piece))
                piece = []
            piece.append(unit)
        if piece:
            out.append(sep.join(piece))
    return out


def chunk(text: str, budget: int, count: TokenCounter = approximate_tokens, overlap: int = 0) -> list[str]:
    """``text`` cut into passages of at most ``budget`` tokens, on paragraph boundaries (paragraphs joined by a
    blank line); ``overlap`` paragraphs of one passage start the next.

    >>> chunk("One two three.\\n\\nFour five.\\n\\nSix seven eight nine.", budget=5)
    ['One two three.\\n\\nFour five.', 'Six seven eight nine.']
    """
    pieces = [(p, count(p)) for para in paragraphs(text) for p in _pieces(para, budget, count)]
    sep = count("\n\n")

    def fits(parts: list[tuple[str, int]], piece: tuple[str, int]) -> bool:
        # the sum of the parts' counts is close to the joined text's, but not exact (merges, separators): it
        # decides only far from the budget; near it the joined text is counted
        if sum(k for _, k in parts) + piece[1] + sep * len(parts) <= 0.9 * budget:
            return True
        return count("\n\n".join([p for p, _ in parts] + [piece[0]])) <= budget

    passages: list[str] = []
    current: list[tuple[str, int]] = []
    for piece in pieces:
        if current and not fits(current, piece):
            passages.append("\n\n".join(p for p, _ in current))
            current = current[-overlap:] if overlap else []
            while current and not fits(current, piece):
                current.pop(0)
        current.append(piece)
    if current:
        passages.append("\n\n".join(p for p, _ in current))
    return passages


def passage_language(text: str, languages: Iterable[str]) -> str | None:
    """The language of ``text`` among ``languages``, or None (another language, or none the identifier
    knows). Chinese and Japanese are told apart by kana, as in the filters."""
    if cjk_share(text) > 0.3:
        lang = "ja" if _KANA.search(text) else "zh"
    else:
        lang = detect_language(text)[0]
    return lang if lang in set(languages) else None


# --------------------------------------------------------------------------- the whole stream


@dataclass
class IngestReport:
    """What ingestion read and why passages were left out (per language where there is one)."""

    documents: int = 0
    passages: int = 0
    """Passages cut from the documents, before any was skipped."""
    characters: int = 0
    kept: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    """``other_file_type``, ``empty_document``, ``too_short``, ``other_language``, ``exact_duplicate``,
    ``near_duplicate``, ``over_quota``."""
    by_language: dict[str, Counter] = field(default_factory=dict)
    """Candidate passages per language (after the language and duplicate checks), before the quota."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "passages": self.passages,
            "characters": self.characters,
            "kept": dict(self.kept),
            "skipped": dict(self.skipped),
            "candidates_by_language": {k: dict(v) for k, v in self.by_language.items()},
        }


def passage_id(document_id: str, index: int, text: str) -> str:
    """``<document>#<index>~<8 hex digits of the text's hash>`` (no ``#<index>`` for a document that is one
    passage). The hash makes a passage whose text changed a new passage: the outputs stored for the old text
    under its id are not reused for the new one.

    >>> passage_id("notes/a.md", 2, "Aspirin inhibits cyclo-oxygenase.")
    'notes/a.md#2~b7166877'
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=4).hexdigest()
    return f"{document_id}#{index}~{digest}" if index else f"{document_id}~{digest}"


def _priority(seed: int, passage_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{passage_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ingest(
    documents: Iterable[Document],
    languages: Iterable[str],
    *,
    per_language: int = 0,
    seed: int = 0,
    max_tokens: int = 1024,
    min_tokens: int = 32,
    overlap: int = 0,
    near_duplicate_threshold: float = 0.8,
    count: TokenCounter = approximate_tokens,
    report: IngestReport | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Passage], IngestReport]:
    """Passages from ``documents``: cut, language-checked, deduplicated, and ``per_language`` per language
    (0 = all) by a seeded sample. Returned by language (in ``languages`` order), then document order.

    ``progress`` is called with the UTF-8 size of each document read."""
    langs = list(languages)
    report = report or IngestReport()
    seen: set[int] = set()
    order = 0
    # per language, a max-heap (by negated priority) of the sample's candidates: (-priority, order, passage)
    heaps: dict[str, list[tuple[int, int, Passage]]] = {lang: [] for lang in langs}
    room = 2 * per_language if per_language else 0
    for doc in documents:
        report.documents += 1
        report.characters += len(doc.text)
        if progress:
            progress(len(doc.text.encode("utf-8")))
        texts = chunk(doc.text, max_tokens, count, overlap)
        if not texts:
            report.skipped["empty_document"] += 1
        for i, text in enumerate(texts, 1):
            report.passages += 1
            if count(text) < min_tokens:
                report.skipped["too_short"] += 1
                continue
            lang = doc.lang if doc.lang in langs else (None if doc.lang else passage_language(text, langs))
            if lang is None:
                report.skipped["other_language"] += 1
                continue
            key = hash(normalize(text))
            if key in seen:
                report.skipped["exact_duplicate"] += 1
                continue
            seen.add(key)
            pid = passage_id(doc.id, i if len(texts) > 1 else 0, text)
            title = doc.title or Path(doc.id).stem
            passage = Passage(pid, lang, "", title, text, doc.source)
            report.by_language.setdefault(lang, Counter())["candidates"] += 1
            entry = (-_priority(seed, pid), order, passage)
            order += 1
            heap = heaps[lang]
            if not room or len(heap) < room:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)
                report.skipped["over_quota"] += 1
            else:
                report.skipped["over_quota"] += 1
    out: list[Passage] = []
    for lang in langs:
        # a sample in priority order (the order a bigger quota would extend); everything in document order
        entries = sorted(heaps[lang], key=(lambda e: (-e[0], e[1])) if room else (lambda e: e[1]))
        dups = find_duplicates([p.text for _, _, p in entries], near_duplicate_threshold)
        report.skipped["near_duplicate"] += len(dups)
        entries = [e for k, e in enumerate(entries) if k not in dups]
        if per_language:
            report.skipped["over_quota"] += max(0, len(entries) - per_language)
            entries = sorted(entries[:per_language], key=lambda e: e[1])
        report.kept[lang] = len(entries)
        out += [p for _, _, p in entries]
    return out, report


# --------------------------------------------------------------------------- from a profile


def corpus_kind(corpus) -> str:
    """``bundled``, ``files`` or ``dataset``: what a profile's ``datagen.corpus`` section reads."""
    return "files" if corpus.path else ("dataset" if corpus.dataset else "bundled")


def corpus_documents(corpus, skipped: Counter | None = None) -> Iterator[Document]:
    """The documents of a profile's ``datagen.corpus`` (your files or dataset), streamed."""
    columns = dict(
        text_column=corpus.text_column,
        id_column=corpus.id_column,
        language_column=corpus.language_column,
        title_column=corpus.title_column,
    )
    if corpus.path:
        return read_file_documents(corpus.path, skipped=skipped, **columns)
    return read_dataset_documents(corpus.dataset, corpus.config, corpus.split, **columns)


def token_counter(cfg, base_model_path: str | Path | None = None) -> TokenCounter:
    """How notebook 01 counts a passage's tokens: with the local generator's own tokenizer (the generator
    model, else the base model), and approximately (:func:`approximate_tokens`) for an endpoint."""
    dg = cfg.datagen
    name = dg.generator_model or (str(base_model_path) if base_model_path else "")
    if dg.backend != "local" or not name:
        return approximate_tokens
    from transformers import AutoTokenizer

    return tokenizer_counter(AutoTokenizer.from_pretrained(name))


def load_passages(
    cfg, count: TokenCounter | None = None, progress: bool = True
) -> tuple[list[Passage], IngestReport | None]:
    """The passages notebook 01 generates from: the bundled corpus's first ``passages_per_language`` per
    language (no report), or your corpus ingested (:func:`ingest`) with its report."""
    from .corpus import load_corpus, select_passages

    dg, corpus = cfg.datagen, cfg.datagen.corpus
    if corpus_kind(corpus) == "bundled":
        return select_passages(load_corpus(cfg.languages), dg.passages_per_language), None
    from tqdm.auto import tqdm

    report = IngestReport()
    total = sum(f.stat().st_size for f in corpus_files(corpus.path)) if corpus.path else None
    with tqdm(total=total, desc="corpus", unit="B", unit_scale=True, disable=not progress) as bar:
        passages, report = ingest(
            corpus_documents(corpus, report.skipped),
            cfg.languages,
            per_language=dg.passages_per_language,
            seed=cfg.seed,
            max_tokens=corpus.max_passage_tokens,
            min_tokens=corpus.min_passage_tokens,
            overlap=corpus.overlap_paragraphs,
            near_duplicate_threshold=corpus.near_duplicate_threshold,
            count=count or approximate_tokens,
            report=report,
            progress=bar.update,
        )
        bar.total = bar.n  # file sizes count markup and PDF structure: end the bar at what was read
        bar.refresh()
    if not passages:
        where = corpus.path or corpus.dataset
        raise CorpusError(
            f"no passage of {where!r} is in the run's languages {list(cfg.languages)} and long enough "
            f"(documents read: {report.documents}; skipped: {dict(report.skipped)})"
        )
    return passages, report
