"""Step 05 (notebook ``05_evaluate``): the four benchmarks as they are really distributed, as one item type.

Every loader turns its benchmark's public format into :class:`EvalItem` records, from the source a profile names:

* ``bundled`` - the course's own small sets, written by us in each public format (``mmed_helpers/data/eval``);
* ``hub`` - the public dataset: MedQA (``GBaker/MedQA-USMLE-4-options``), MedMCQA (``openlifescienceai/medmcqa``,
  validation split), PubMedQA (``qiaojin/PubMedQA``, ``pqa_labeled``) through ``datasets``; MMedBench
  (``Henrychur/MMedBench``) is one ``MMedBench.zip`` on the Hub, downloaded once into the Hugging Face cache and
  read from there (offline runs use the cached copy);
* a local file or folder: JSONL, JSON or Parquet in the benchmark's format; for MMedBench also the zip itself,
  an unzipped root at any depth (``.../MMedBench/Test/Japanese.jsonl``) or a single language file.

Field variants that circulate are read too: MedQA's ``-hf`` form (``sent1``, ``ending0-3``, ``label``, the form
lm-evaluation-harness loads), MedMCQA's unlabelled test split (counted as skipped), PubMedQA's original
``ori_pqal.json`` (``QUESTION``, ``CONTEXTS``; a dict keyed by PMID), MMedBench's ``answer_idx`` as ``"A,C"``,
``"AC"`` or a list. A record that does not fit is skipped and reported with its ``file:line``; a benchmark or
language that yields no item at all is an error naming the source and what was looked for.

PubMedQA is scored, like lm-evaluation-harness (since 0.4) and the PubMedQA leaderboard, on its **test fold**:
the 500 labelled PMIDs its authors hold out (``data/eval/pubmedqa_test_fold.txt``); ``fold="all"`` takes all
1,000. The course's bundled PubMedQA set is its own small test set and is not filtered.

    >>> result = load_benchmark("mmedbench", "/data/MMedBench.zip", languages=["ja", "fr"])
    >>> result.items[0].answers
    ['A', 'C']
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..core.config import BENCHMARKS, MMEDBENCH_SPLITS, PUBMEDQA_FOLDS
from ..core.decontam import BenchmarkIndex, benchmark_texts
from ..core.flags import hub_offline
from ..core.jsonl import parse_jsonl
from ..core.languages import TABLE
from ..core.layout import EVAL_DIR, PUBMEDQA_TEST_FOLD
from ..core.mcformat import LETTERS, FormatError, answer_letters, mc_prompt, option_lines, options_list

HUB = {
    "medqa": ("GBaker/MedQA-USMLE-4-options", None, "test"),
    "medmcqa": ("openlifescienceai/medmcqa", None, "validation"),
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled", "train"),
    "mmedbench": ("Henrychur/MMedBench", None, "test"),
}
MMEDBENCH_ZIP = "MMedBench.zip"
"""The one data file of ``Henrychur/MMedBench`` on the Hub (``MMedBench/Train/`` and ``MMedBench/Test/`` inside)."""
PUBMEDQA_CHOICES = ("yes", "no", "maybe")
BUNDLED = {
    "medqa": EVAL_DIR / "medqa" / "test.jsonl",
    "medmcqa": EVAL_DIR / "medmcqa" / "validation.jsonl",
    "pubmedqa": EVAL_DIR / "pubmedqa" / "pqa_labeled.jsonl",
    "mmedbench": EVAL_DIR / "mmedbench",
}
HARNESS_TASKS = {"medqa": "medqa_4options", "medmcqa": "medmcqa", "pubmedqa": "pubmedqa"}
"""lm-evaluation-harness's built-in task whose prompt and choices :meth:`EvalItem.loglik_context` reproduce
(MMedBench has none there; it is asked like MedQA)."""


class EvalError(ValueError):
    """A benchmark source cannot be read or yields nothing (the message names it and the fix)."""


@dataclass
class EvalItem:
    """One multiple-choice question of any benchmark. ``answers`` holds one or more gold letters."""

    id: str
    benchmark: str
    lang: str
    question: str
    options: list[str]
    answers: list[str]
    context: str = ""
    """PubMedQA: the abstract's sections joined by newlines."""

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    @property
    def multi(self) -> bool:
        return len(self.answers) > 1

    def loglik_context(self) -> str:
        """The context string of lm-evaluation-harness's task for this benchmark (:data:`HARNESS_TASKS`)."""
        if self.benchmark == "pubmedqa":
            return f"Abstract: {self.context}\nQuestion: {self.question}\nAnswer:"
        choices = "Choices:\n" if self.benchmark == "medmcqa" else ""
        return f"Question: {self.question}\n{choices}{option_lines(self.options)}\nAnswer:"

    def loglik_choices(self) -> list[str]:
        """The continuations the harness scores after the context: ``" A"``, ``" B"``, ... (PubMedQA: the
        words ``" yes"``, ``" no"``, ``" maybe"``), in the order of :attr:`letters`."""
        words = self.options if self.benchmark == "pubmedqa" else list(self.letters)
        return [f" {w}" for w in words]

    def chat_prompt(self) -> str:
        """The question exactly as stage 2 trains on it (:func:`~mmed_helpers.core.mcformat.mc_prompt`)."""
        return mc_prompt(self.question, self.options, self.lang, multi=self.multi, context=self.context)


@dataclass
class LoadResult:
    items: list[EvalItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(where, why) for every record that did not fit the format, e.g. ``("test.jsonl:7", "answer_idx 'F' ...")``."""
    source: str = ""


# --------------------------------------------------------------------------- record converters


class _Bad(ValueError):
    pass


def _text(rec: dict, *keys: str) -> str:
    for key in keys:
        value = rec.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise _Bad(f"missing or empty field {keys[0]!r}")


def _options_dict(rec: dict) -> list[str]:
    opts = rec.get("options")
    if not isinstance(opts, dict) or len(opts) < 2:
        raise _Bad("field 'options' must map letters to texts")
    try:
        texts = options_list({k: str(v) for k, v in opts.items()})
    except FormatError as exc:
        raise _Bad(str(exc)) from None
    if any(not t for t in texts):
        raise _Bad("an option is empty")
    return texts


def _letters(value: Any, n: int) -> list[str]:
    try:
        return answer_letters(value, n)
    except FormatError as exc:
        raise _Bad(str(exc)) from None


def _medqa(rec: dict, rid: str) -> EvalItem:
    if "sent1" in rec:  # the -hf form lm-evaluation-harness loads: sent1, ending0-3, label
        options = [_text(rec, f"ending{i}") for i in range(4)]
        label = rec.get("label")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= 3:
            raise _Bad(f"label must be an integer 0-3, got {label!r}")
        return EvalItem(str(rec.get("id") or rid), "medqa", "en", _text(rec, "sent1"), options, [LETTERS[label]])
    options = _options_dict(rec)
    if len(options) != 4:
        raise _Bad(f"MedQA-USMLE 4-option items need 4 options, got {len(options)}")
    answers = _letters(rec.get("answer_idx"), 4)
    if len(answers) != 1:
        raise _Bad("MedQA has one answer")
    return EvalItem(rid, "medqa", "en", _text(rec, "question"), options, answers)


def _medmcqa(rec: dict, rid: str) -> EvalItem:
    options = [_text(rec, k) for k in ("opa", "opb", "opc", "opd")]
    cop = rec.get("cop")
    if cop == -1:
        raise _Bad("unlabelled (cop -1: MedMCQA's test split has no answers; its validation split is the test set)")
    if not isinstance(cop, int) or isinstance(cop, bool) or not 0 <= cop <= 3:
        raise _Bad(f"cop must be an integer 0-3 (the Hub's numbering of opa-opd), got {cop!r}")
    letter = LETTERS[cop]
    return EvalItem(str(rec.get("id") or rid), "medmcqa", "en", _text(rec, "question"), options, [letter])


def _pubmedqa(rec: dict, rid: str) -> EvalItem:
    ctx = rec.get("context", rec.get("CONTEXTS"))
    parts = ctx.get("contexts") if isinstance(ctx, dict) else ctx
    if isinstance(parts, str):
        parts = [parts]
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise _Bad("context.contexts (or CONTEXTS) must be a list of strings")
    decision = str(rec.get("final_decision", "")).strip().lower()
    if decision not in PUBMEDQA_CHOICES:
        raise _Bad(f"final_decision must be yes, no or maybe, got {rec.get('final_decision')!r}")
    answer = LETTERS[PUBMEDQA_CHOICES.index(decision)]
    pid = str(rec.get("pubid") or rec.get("PMID") or rid)
    question = _text(rec, "question", "QUESTION")
    context = "\n".join(p.strip() for p in parts)  # the harness joins the sections with newlines
    return EvalItem(pid, "pubmedqa", "en", question, list(PUBMEDQA_CHOICES), [answer], context=context)


def _mmedbench(rec: dict, rid: str, lang: str) -> EvalItem:
    options = _options_dict(rec)
    return EvalItem(
        rid, "mmedbench", lang, _text(rec, "question"), options, _letters(rec.get("answer_idx"), len(options))
    )


def convert(benchmark: str, rec: dict, rid: str, lang: str = "en") -> EvalItem:
    """One raw record of ``benchmark``'s public format as an :class:`EvalItem` (raises on a bad record)."""
    if not isinstance(rec, dict):
        raise _Bad("record is not a JSON object")
    if benchmark == "medqa":
        return _medqa(rec, rid)
    if benchmark == "medmcqa":
        return _medmcqa(rec, rid)
    if benchmark == "pubmedqa":
        return _pubmedqa(rec, rid)
    if benchmark == "mmedbench":
        return _mmedbench(rec, rid, lang)
    raise EvalError(f"unknown benchmark {benchmark!r}; choose from {list(BENCHMARKS)}")


# --------------------------------------------------------------------------- readers


def read_records(path: Path) -> list[tuple[str, Any]]:
    """(``file:line``, record) pairs from a JSONL, JSON or Parquet file. A JSONL line that is not valid JSON
    comes back as the record ``_Bad`` so the caller counts it."""
    if path.suffix == ".parquet":
        import pandas as pd

        return [(f"{path.name}:{i + 1}", r) for i, r in enumerate(pd.read_parquet(path).to_dict("records"))]
    return records_from_text(path.read_text(encoding="utf-8"), path.name)


def records_from_text(text: str, name: str) -> list[tuple[str, Any]]:
    """Records of a JSON or JSONL text: a JSON list, a JSON object keyed by id (PubMedQA's ``ori_pqal.json``:
    the key becomes ``pubid``), or one record per line."""
    stripped = text.lstrip()
    if name.endswith(".json") and stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return [(f"{name}:{exc.lineno}", _Bad(f"not valid JSON ({exc.msg})"))]
        if isinstance(data, dict):
            if all(isinstance(v, dict) for v in data.values()):
                return [(f"{name}:{k}", {"pubid": k, **v}) for k, v in data.items()]
            data = [data]
        return [(f"{name}:{i + 1}", r) for i, r in enumerate(data)]
    return [(line.where, _Bad(line.error) if line.error else line.record) for line in parse_jsonl(text, name)]


def _convert_all(benchmark: str, records: list[tuple[str, Any]], lang: str, result: LoadResult) -> int:
    """Convert ``records`` into ``result``; returns how many items they gave."""
    records = [(w, r if isinstance(r, _Bad) else _plain(r)) for w, r in records]
    before = len(result.items)
    for where, rec in records:
        if isinstance(rec, _Bad):
            result.skipped.append((where, str(rec)))
            continue
        rid = f"{benchmark}-{lang}-{where.rsplit(':', 1)[-1]}"
        try:
            result.items.append(convert(benchmark, rec, rid, lang))
        except _Bad as exc:
            result.skipped.append((where, str(exc)))
    return len(result.items) - before


def _plain(rec: Any) -> Any:
    """numpy arrays and scalars (from Parquet) as plain Python values."""
    if isinstance(rec, dict):
        return {k: _plain(v) for k, v in rec.items()}
    if hasattr(rec, "tolist"):
        return _plain(rec.tolist())
    if isinstance(rec, list | tuple):
        return [_plain(v) for v in rec]
    return rec


# --------------------------------------------------------------------------- loading


def load_benchmark(
    benchmark: str,
    source: str | Path = "bundled",
    languages: Sequence[str] = ("en",),
    offline: bool = True,
    *,
    split: str = "test",
    fold: str = "test",
    cache_dir: str | Path | None = None,
) -> LoadResult:
    """Load ``benchmark`` from ``source`` (``bundled``, ``hub`` or a local path; see the module's notes).

    ``languages`` picks MMedBench's language files; ``split`` its ``Test`` (default) or ``Train`` folder;
    ``fold`` PubMedQA's 500-item ``test`` fold (default) or ``all`` labelled items. Raises :class:`EvalError`
    when the source is missing or yields no item (for MMedBench: for any requested language)."""
    if benchmark not in BENCHMARKS:
        raise EvalError(f"unknown benchmark {benchmark!r}; choose from {list(BENCHMARKS)}")
    if split not in MMEDBENCH_SPLITS:
        raise EvalError(f"split must be one of {list(MMEDBENCH_SPLITS)}, got {split!r}")
    if fold not in PUBMEDQA_FOLDS:
        raise EvalError(f"PubMedQA fold must be one of {list(PUBMEDQA_FOLDS)}, got {fold!r}")
    result = LoadResult([], source=str(source))
    if benchmark == "mmedbench":
        _load_mmedbench(source, languages, split, offline, cache_dir, result)
    elif source == "hub":
        _load_hub_dataset(benchmark, offline, result)
    else:
        path = BUNDLED[benchmark] if source == "bundled" else Path(source).expanduser()
        if not path.exists():
            raise EvalError(f"{benchmark} source {path} not found; give a file or folder in its public format")
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
        for f in files:
            _convert_all(benchmark, read_records(f), "en", result)
    if benchmark == "pubmedqa" and source != "bundled" and fold == "test":
        _keep_test_fold(result)
    if not result.items:
        why = f"; {len(result.skipped)} records skipped, first: {result.skipped[0]}" if result.skipped else ""
        raise EvalError(f"{benchmark} source {source} gave no items{why}")
    return result


_SUFFIXES = (".jsonl", ".json", ".parquet")


def _keep_test_fold(result: LoadResult) -> None:
    fold = pubmedqa_test_fold()
    kept = [it for it in result.items if it.id in fold]
    if not kept and result.items:
        raise EvalError(
            f"none of the {len(result.items)} PubMedQA items of {result.source} is in the 500-item test fold "
            "(PMIDs of the authors' held-out set); use fold='all' (evaluation.pubmedqa_fold: all) for every item"
        )
    result.items = kept


def pubmedqa_test_fold() -> frozenset[str]:
    """The 500 PMIDs of PubMedQA's test fold (shipped with the course, from the PubMedQA authors' split)."""
    lines = PUBMEDQA_TEST_FOLD.read_text(encoding="utf-8").splitlines()
    return frozenset(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))


def _load_hub_dataset(benchmark: str, offline: bool, result: LoadResult) -> None:
    if offline or hub_offline():
        raise EvalError(
            f"{benchmark}: source 'hub' needs network access; this run is offline. Download the "
            "dataset once and give its local folder, or use 'bundled'"
        )
    from datasets import load_dataset

    repo, config, split = HUB[benchmark]
    ds = load_dataset(repo, config, split=split)
    _convert_all(benchmark, [(f"{repo}[{i}]", r) for i, r in enumerate(ds)], "en", result)


# --------------------------------------------------------------------------- MMedBench


def _load_mmedbench(
    source: str | Path,
    languages: Sequence[str],
    split: str,
    offline: bool,
    cache_dir: str | Path | None,
    result: LoadResult,
) -> None:
    if source == "hub":
        root: Path = _mmedbench_zip_from_hub(offline, cache_dir)
    else:
        root = BUNDLED["mmedbench"] if source == "bundled" else Path(source).expanduser()
        if not root.exists():
            raise EvalError(f"mmedbench source {root} not found; give MMedBench.zip, its unzipped folder or a file")
    folder = MMEDBENCH_SPLITS[split]
    for lang in languages:
        stem = TABLE[lang].mmedbench_file if lang in TABLE else lang
        where, text = _mmedbench_file(root, stem, folder, lang, languages)
        if _convert_all("mmedbench", records_from_text(text, where), lang, result) == 0:
            raise EvalError(f"mmedbench: {where} gave no {lang} items ({len(result.skipped)} records skipped)")


def _mmedbench_file(root: Path, stem: str, folder: str, lang: str, languages: Sequence[str]) -> tuple[str, str]:
    """(name, text) of language file ``<stem>.jsonl`` of split folder ``folder`` in a zip, a folder or a file."""
    wanted = f"{folder}/{stem}.jsonl"
    if root.is_dir() and (root / MMEDBENCH_ZIP).is_file() and not any(root.rglob(f"{stem}.jsonl")):
        root = root / MMEDBENCH_ZIP
    if root.suffix == ".zip":
        with zipfile.ZipFile(root) as zf:
            names = [n for n in zf.namelist() if _matches(PurePosixPath(n), stem, folder)]
            if not names:
                raise EvalError(f"mmedbench: {root} holds no {wanted} (for language {lang!r})")
            name = min(names, key=len)
            with zf.open(name) as fh:
                return f"{PurePosixPath(name).name}", io.TextIOWrapper(fh, encoding="utf-8").read()
    if root.is_file():
        own = root.stem == stem or (len(languages) == 1 and root.stem not in _STEMS)
        if not own:
            raise EvalError(f"mmedbench: {root} is not the {stem} file (for language {lang!r}); give a folder or zip")
        return root.name, root.read_text(encoding="utf-8")
    found = sorted((p for p in root.rglob(f"{stem}.jsonl") if _matches(p, stem, folder)), key=lambda p: len(p.parts))
    flat = root / f"{stem}.jsonl"
    path = found[0] if found else (flat if flat.is_file() else None)
    if path is None:
        raise EvalError(f"mmedbench: no {wanted} under {root} (nor {stem}.jsonl in it) for language {lang!r}")
    return path.name, path.read_text(encoding="utf-8")


_STEMS = {row.mmedbench_file for row in TABLE.values()}


def _matches(path: PurePosixPath | Path, stem: str, folder: str) -> bool:
    return path.name == f"{stem}.jsonl" and path.parent.name.lower() == folder.lower()


def _mmedbench_zip_from_hub(offline: bool, cache_dir: str | Path | None) -> Path:
    """``MMedBench.zip`` from the Hugging Face cache, downloaded into it first when the run is online."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo = HUB["mmedbench"][0]
    local_only = offline or hub_offline()
    try:
        return Path(
            hf_hub_download(repo, MMEDBENCH_ZIP, repo_type="dataset", cache_dir=cache_dir, local_files_only=local_only)
        )
    except LocalEntryNotFoundError:
        raise EvalError(
            f"mmedbench: source 'hub' needs network access; this run is offline and {repo}/{MMEDBENCH_ZIP} is "
            "not in the local Hugging Face cache. Download it once (`hf download Henrychur/MMedBench "
            "--repo-type dataset`) or give the zip's path"
        ) from None


# --------------------------------------------------------------------------- choosing items


def select_items(items: Iterable[EvalItem], cap: int, seed: int) -> list[EvalItem]:
    """At most ``cap`` items per benchmark and language (0 = all), drawn with ``seed`` (not the first N), in
    their original order, so every model of a run is scored on the same items."""
    groups: dict[tuple[str, str], list[EvalItem]] = {}
    for it in items:
        groups.setdefault((it.benchmark, it.lang), []).append(it)
    out: list[EvalItem] = []
    for (bench, lang), group in groups.items():
        if cap and len(group) > cap:
            keep = set(random.Random(f"{seed}:{bench}:{lang}").sample(range(len(group)), cap))
            group = [it for i, it in enumerate(group) if i in keep]
        out.extend(group)
    return out


def load_profile_benchmarks(evaluation, languages: Sequence[str], offline: bool) -> tuple[list[EvalItem], dict]:
    """Every item of the benchmarks a profile's ``evaluation`` section names, from its sources, splits and
    folds (what notebook 05 evaluates on, before any cap), and ``{benchmark: why}`` for those that could not be
    loaded (the caller decides whether that is fatal)."""
    items: list[EvalItem] = []
    failed: dict[str, str] = {}
    for bench in evaluation.benchmarks:
        try:
            loaded = load_benchmark(
                bench,
                getattr(evaluation, f"{bench}_source"),
                languages=languages,
                offline=offline,
                split=evaluation.mmedbench_split,
                fold=evaluation.pubmedqa_fold,
            )
        except (EvalError, OSError) as exc:
            failed[bench] = str(exc)
            continue
        items += loaded.items
    return items, failed


def decontamination_index(cfg) -> BenchmarkIndex | None:
    """The n-gram index (:mod:`~mmed_helpers.core.decontam`) of every item of the profile's evaluation
    benchmarks in the run's languages, which generated and translated training items are checked against; None
    when ``datagen.decontamination_ngram`` is 0. A benchmark that cannot be loaded is named and left unchecked
    (notebook 05 fails on it with the same message)."""
    n = cfg.datagen.decontamination_ngram
    if n == 0:
        return None
    eval_items, failed = load_profile_benchmarks(cfg.evaluation, cfg.languages, cfg.offline)
    for bench, why in failed.items():
        print(f"decontamination: {bench} not checked ({why})", flush=True)
    return BenchmarkIndex.build(benchmark_texts(eval_items), n=n)
