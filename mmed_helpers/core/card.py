"""Dataset cards for MMed-IFT and MMed-IFT-MC, and their upload to the Hugging Face Hub.

A card is written from what the run recorded and nothing else: the saved datasets (rows per language and
origin), notebook 01's manifest (the reject table, what decontamination removed and how much of each benchmark
the corpus itself holds, the generator, its settings and the prompts' hashes) and notebook 02's (translator,
CCTS scorer, threshold) with its score of every round trip. Without notebook 02 the card says there are no
translations; with decontamination off it says the items were not checked::

    from mmed_helpers.core.card import dataset_card, prepare_upload, push_to_hub
    text = dataset_card(run, "mc", license="cc-by-4.0")   # README.md: YAML metadata, then Markdown
    prepare_upload(run, "mc", run.publish_folder("mc"))    # README.md + data/train-00000-of-00001.parquet
    push_to_hub(run, "mc", "me/mmed-ift-mc")               # token from $HF_TOKEN; a private dataset; its URL

A card names no folder of the machine that made it: an absolute path (a local model, your corpus folder)
appears as its last part, ``…/base``.

The upload folder is laid out as the Hub serves a dataset, and ``datasets.load_dataset(folder)`` reads it as the
Hub does, through the card's ``configs:``: one ``train`` split holding the run's dataset (seed and generated
items, in their saved order), then its kept translations. The translations' score columns (``ccts``, ``bleu``,
``bertscore``) are kept, empty on the other rows, so a user can filter again at another threshold; without
translations the columns are the dataset's own.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import atomic_directory, file_sha256, read_manifest
from .flags import flag, hub_offline
from .jsonl import read_jsonl
from .languages import LANGUAGES, TABLE
from .layout import CORPUS_DIR, MissingArtifactError, RunLayout, step_folder
from .records import records_dataset

NAMES = {"ift": "MMed-IFT", "mc": "MMed-IFT-MC"}
WHAT = {
    "ift": "free-form medical instructions, each a question and its answer, for stage 1 of the recipe (DoRA "
    "fine-tuning)",
    "mc": "exam-style multiple-choice items, each with its correct letter(s) and a rationale, for stage 2 of the "
    "recipe (QLoRA fine-tuning)",
}
TASKS = {"ift": ["question-answering", "text-generation"], "mc": ["multiple-choice", "question-answering"]}
PAPER = "[arXiv 2409.05732](https://arxiv.org/abs/2409.05732)"
CARD_FILE = "README.md"
DATA_DIR = "data"
DATA_FILE = f"{DATA_DIR}/train-00000-of-00001.parquet"
"""Where the rows go in the upload folder (the Hub's own naming of a one-shard ``train`` split)."""
DATA_PATTERN = f"{DATA_DIR}/train-*"
ORIGINS = ("seed", "generated", "translated")
TOKEN_URL = "https://huggingface.co/settings/tokens"
COLUMNS = {
    "id": "stable id (a translation's is `<source id>|<language>`)",
    "lang": "language code (ISO 639-1)",
    "question": "the question",
    "options": "the answer options, in letter order (A, B, ...)",
    "answer": "the answer",
    "mc/answer": "the correct letter, or several joined by commas (`A,C`)",
    "rationale": "why the answer is correct",
    "source_id": "the corpus passage the item was written from (empty for seeds); for a translation, its source",
    "origin": "`seed` (hand-written), `generated` or `translated`",
    "specialty": "medical specialty (an English label)",
    "kind": "`ift` or `mc`",
    "messages": "the chat form trained on: a user turn and an assistant turn",
    "ccts": "the translation's cycle-consistency translation score (translations only)",
    "bleu": "sentence BLEU of the back-translation against the source, scaled to [0, 1] (translations only)",
    "bertscore": "BERTScore F1 of the back-translation against the source (translations only)",
}


class PublishError(RuntimeError):
    """A card or an upload cannot be made as asked; the message says what to change."""


# --------------------------------------------------------------------------- what the run recorded


@dataclass
class _Facts:
    kind: str
    generate: dict[str, Any]
    """Notebook 01's manifest."""
    translate: dict[str, Any] | None
    """Notebook 02's manifest; None when it has not run (or its translations are left out)."""
    rows: list[dict[str, Any]]
    """The upload's rows: the dataset's, then its kept translations."""
    columns: list[str]
    score_columns: list[str] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    """Notebook 02's round trips of this kind (one per source item and target language)."""
    translations: str = "none"
    """``included``, ``left out`` or ``none`` (notebook 02 has not run)."""


def _manifest(run: RunLayout, step: str) -> dict[str, Any] | None:
    try:
        return read_manifest(run.step_dir(step))
    except FileNotFoundError:
        return None


def _gather(run: RunLayout, kind: str, include_translations: bool) -> _Facts:
    from datasets import load_from_disk

    if kind not in NAMES:
        raise ValueError(f"unknown dataset kind {kind!r}; the kinds are {list(NAMES)}")
    path = run.require(kind)
    generate = _manifest(run, "generate")
    if generate is None:
        raise MissingArtifactError(
            f"{NAMES[kind]} has no manifest in {run.step_dir('generate')}: run notebook {step_folder('generate')} "
            "to its end first"
        )
    base = load_from_disk(str(path))
    facts = _Facts(kind, generate, None, list(base), list(base.column_names))
    translated = f"{kind}_translated"
    translate = _manifest(run, "translate") if run.has(translated) else None
    if translate is None:
        return facts
    if not include_translations:
        facts.translations = "left out"
        return facts
    recorded = translate.get("inputs", {}).get(path.name, {}).get("sha256")
    if recorded and recorded != file_sha256(path):
        raise PublishError(
            f"the translations of notebook {step_folder('translate')} were made from another {NAMES[kind]} (notebook "
            f"{step_folder('generate')} ran again since): run notebook {step_folder('translate')} again, or leave "
            "them out with include_translations=False"
        )
    kept = load_from_disk(str(run.require(translated)))
    facts.score_columns = [c for c in kept.column_names if c not in facts.columns]
    facts.rows = [{**r, **dict.fromkeys(facts.score_columns)} for r in facts.rows] + list(kept)
    facts.columns += facts.score_columns
    facts.translate, facts.translations = translate, "included"
    if run.ccts_scores.is_file():
        facts.scores = [ln.record for ln in read_jsonl(run.ccts_scores) if ln.record and ln.record["kind"] == kind]
    return facts


# --------------------------------------------------------------------------- the card


def size_category(n: int) -> str:
    """The Hub's size category of a dataset of ``n`` rows (``n<1K``, ``1K<n<10K``, ...)."""
    bounds = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"]
    for i, label in enumerate(bounds):
        if n < 1000 * 10**i:
            return f"n<{label}" if i == 0 else f"{bounds[i - 1]}<n<{label}"
    return "n>1T"


def dataset_card(
    run: RunLayout,
    kind: str,
    *,
    license: str = "other",
    repo_id: str | None = None,
    include_translations: bool = True,
) -> str:
    """The Hugging Face dataset card (``README.md`` text) of MMed-IFT (``kind="ift"``) or MMed-IFT-MC
    (``"mc"``) as the run made it: YAML metadata (licence, languages, tasks, size, the ``configs:`` of
    :func:`prepare_upload`'s folder), then what it is, its sources and licences, rows per language and origin,
    the reject table, decontamination, CCTS and how it was made.

    ``license``: the dataset's licence as the Hub names it (``cc-by-4.0``, ...). The default ``other`` is a
    placeholder the card says to replace: the licence follows from your corpus and the models' terms, and
    nothing here can choose it. ``repo_id`` goes into the card's loading example."""
    return _card(_gather(run, kind, include_translations), license, repo_id)


def _card(f: _Facts, license: str, repo_id: str | None) -> str:
    from huggingface_hub import DatasetCardData

    langs = _ordered({r["lang"] for r in f.rows})
    tags = ["medical", "instruction-tuning", "synthetic", "mmed-course"]
    if any(r["origin"] == "translated" for r in f.rows):
        tags += ["machine-translated", "ccts"]
    data = DatasetCardData(
        license=license,
        language=langs,
        multilinguality="multilingual" if len(langs) > 1 else "monolingual",
        task_categories=TASKS[f.kind],
        size_categories=[size_category(len(f.rows))],
        pretty_name=NAMES[f.kind],
        tags=tags,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": DATA_PATTERN}]}],
    )
    sections = [
        _intro(f),
        _sources(f, license),
        _counts(f, langs),
        _rejects(f),
        _decontamination(f),
        _ccts(f),
        _making(f),
        _use(f, repo_id),
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


def _intro(f: _Facts) -> str:
    threshold = (f.translate or {}).get("outputs", {}).get("threshold")
    ccts = f"≥ {threshold}" if threshold is not None else "above a threshold"
    return (
        f"# {NAMES[f.kind]}\n\n"
        f"**{NAMES[f.kind]}** holds {WHAT[f.kind]}. It was made by a run of mmed-course (profile "
        f"`{f.generate.get('profile')}`), a runnable course for the two-stage multilingual medical instruction "
        f"fine-tuning recipe of *Towards Democratizing Multilingual LLMs for Medicine* ({PAPER}): medical passages "
        "are condensed, questions are written from the condensed text and filtered (format, language, support by "
        "the source, duplicates, overlap with evaluation benchmarks); items are then translated into the other "
        "languages and back, and a translation is kept only if its round trip scores a cycle-consistency "
        f"translation score (CCTS) {ccts}.\n\n"
        "Not clinical guidance: the items are machine-written from the passages, the translations machine-made and "
        "filtered by an automatic score; no clinician reviewed them."
    )


def _sources(f: _Facts, license: str) -> str:
    report = _report(f)
    backend = f.generate.get("outputs", {}).get("backend") or {}
    lines = [f"- **Licence of this dataset**: `{license}`."]
    if license == "other":
        lines[0] += (
            " **Not chosen yet**: `other` stands in for a licence nobody set. Set it (`license=` of `dataset_card`, "
            "`prepare_upload` or `push_to_hub`) to the licence your corpus allows, within the terms of use of the "
            "generator and translator models, before publishing."
        )
    lines.append(f"- **Passages**: {_corpus(f.generate)}")
    if report.get("seeds"):
        lines.append(
            f"- **Seed items** ({report['seeds']} checked, `origin: seed`): hand-written for mmed-course; they go "
            "first and win duplicates."
        )
    lines.append("- **Prompts**: written for mmed-course (their SHA-256 under *How it was made*).")
    model = backend.get("model") or backend.get("backend", "not recorded")
    lines.append(f"- **Generator**: `{_public(str(model))}`; its terms of use apply to what it wrote.")
    if f.translate:
        tr = f.translate.get("outputs", {}).get("translator") or {}
        lines.append(
            f"- **Translator**: `{_public(str(tr.get('model') or tr.get('translator', 'not recorded')))}`; likewise."
        )
    lines.append(f"- **Method**: {PAPER}. **Code**: mmed-course, Apache-2.0.")
    return "## Sources and licences\n\n" + "\n".join(lines)


def _corpus(generate: dict[str, Any]) -> str:
    """What notebook 01 read: its ``corpus`` output (``bundled``, ``files`` or ``dataset``) where it has one, else
    the bundled corpus when every recorded corpus input is a bundled file, byte for byte."""
    read = generate.get("outputs", {}).get("corpus") or {}
    inputs = {k: v for k, v in generate.get("inputs", {}).items() if k.startswith("corpus")}
    bundled = {file_sha256(p) for p in CORPUS_DIR.glob("*.jsonl")}
    if read.get("kind", "bundled") == "bundled" and inputs and all(v.get("sha256") in bundled for v in inputs.values()):
        return "the course's bundled corpus, written for mmed-course (not clinical guidance)."
    if read:
        where = f"`{_public(str(read.get('source')))}` ({read.get('kind')}, {read.get('passages', '?')} passages used)"
    elif inputs:
        where = ", ".join(
            f"`{Path(v.get('path', k)).name}` (SHA-256 `{v.get('sha256', '?')}`)" for k, v in inputs.items()
        )
    else:
        return "not recorded in notebook 01's manifest."
    return f"your own corpus, {where}. Its licence is yours to state, and the dataset's licence must respect it."


def _counts(f: _Facts, langs: list[str]) -> str:
    n = Counter((r["lang"], r["origin"]) for r in f.rows)
    origins = [*ORIGINS, *sorted({o for _, o in n} - set(ORIGINS))]
    rows = [[_lang(x), *(n[x, o] for o in origins), sum(n[x, o] for o in origins)] for x in langs]
    rows.append(["**all**", *(sum(n[x, o] for x in langs) for o in origins), len(f.rows)])
    docs = [COLUMNS.get(f"{f.kind}/{c}", COLUMNS.get(c)) for c in f.columns]
    cols = "\n".join(f"- `{c}`: {doc}" if doc else f"- `{c}`" for c, doc in zip(f.columns, docs, strict=True))
    note = {
        "none": f"Translations: none (notebook {step_folder('translate')} has not run on this run).",
        "left out": "Translations: left out of this upload.",
        "included": "Translations: the kept ones, after the dataset's own rows.",
    }[f.translations]
    return (
        f"## Rows\n\nOne `train` split of {len(f.rows)} rows. {note}\n\n"
        + _table(["language", *origins, "total"], rows)
        + f"\n\nColumns:\n\n{cols}"
    )


def _report(f: _Facts) -> dict[str, Any]:
    return (f.generate.get("outputs", {}).get("reports") or {}).get(f.kind) or {}


def _rejects(f: _Facts) -> str:
    report = _report(f)
    if not report:
        return ""
    by_lang = report.get("by_language", {})
    langs = _ordered(set(by_lang))
    rejected = sorted(report.get("rejected", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [["kept", report.get("kept", 0), *(by_lang[x].get("kept", 0) for x in langs)]]
    rows += [[reason, total, *(by_lang[x].get(reason, 0) for x in langs)] for reason, total in rejected]
    text = (
        f"## Filtering\n\n{report.get('seeds', 0)} seed items and {report.get('generated', 0)} generated outputs "
        f"were checked; {report.get('kept', 0)} kept. Every rejected item is counted once, under the first check "
        "it failed:\n\n" + _table(["filter outcome", "total", *langs], rows)
    )
    balance = report.get("answer_balance") or {}
    letters = balance.get("answer_letters") or {}
    if letters:
        text += (
            f"\n\nAnswer letters: the options of {balance.get('moved', 0)} generated items were reordered (with the "
            f"run's seed) so that correct letters come out balanced; {balance.get('left_as_written', 0)} were left "
            f"as written. Correct letters of the generated items: "
            + ", ".join(f"{k} {v}" for k, v in sorted(letters.items()))
            + "."
        )
    return text


def _removed_translations(scores: Iterable[dict[str, Any]], benchmarks: Iterable[str]) -> tuple[Counter, dict]:
    """Per benchmark: translations removed for overlapping it, and the benchmark items they hit."""
    removed: Counter = Counter()
    hit: dict[str, set[str]] = {}
    for row in scores:
        if row.get("reason") != "benchmark_overlap":
            continue
        found = [part.split(":", 1) for part in row.get("detail", "").split(", ") if ":" in part]
        for bench in sorted({b for b, _ in found if b in benchmarks}):
            removed[bench] += 1
        for bench, item in found:
            hit.setdefault(bench, set()).add(item)
    return removed, hit


def _decontamination(f: _Facts) -> str:
    gen = _report(f).get("contamination")
    overlap = f.generate.get("outputs", {}).get("corpus_benchmark_overlap")
    tr = (f.translate or {}).get("outputs", {}).get("contamination")
    if not gen and not overlap and not tr:
        return (
            "## Decontamination\n\nOff for this run (`datagen.decontamination_ngram: 0`): the items were not checked "
            "against the evaluation benchmarks. Check them before evaluating a model trained on this data on "
            "MedQA, MedMCQA, PubMedQA or MMedBench."
        )
    gen, overlap = gen or {}, overlap or {}
    indexed = {**(tr or {}).get("benchmark_items", {}), **gen.get("benchmark_items", {})}
    benches = list(indexed) + sorted(set(overlap) - set(indexed))
    removed_tr, hit_tr = _removed_translations(f.scores, benches)
    rows = []
    for b in benches:
        if f.translations != "included":
            in_tr: Any = None
        else:
            in_tr = removed_tr[b] if tr else "not checked"
        corpus = overlap.get(b)
        rows.append(
            [
                b,
                indexed.get(b),
                gen.get("removed", {}).get(b, 0) if gen else "not checked",
                in_tr,
                f"{corpus['in_corpus']} ({100 * corpus['share']:.1f} %)" if corpus else None,
            ]
        )
    n = gen.get("ngram") or (tr or {}).get("ngram")
    hits = {b: sorted(set(gen.get("hit_items", {}).get(b, [])) | hit_tr.get(b, set())) for b in benches}
    named = "; ".join(f"{b}: {', '.join(f'`{i}`' for i in ids)}" for b, ids in hits.items() if ids)
    return (
        "## Decontamination\n\n"
        f"Every item (seeds too) and every translation that passed CCTS was checked against the items of the "
        f"profile's evaluation benchmarks in the run's languages by {n}-gram overlap (lm-evaluation-harness's "
        "method: NFKC, case-folded, punctuation removed; a Chinese or Japanese character weighs half a word); an "
        "item sharing an n-gram with a benchmark item was removed. The last column is the check the other way: "
        "the benchmark items whose text the corpus itself contains.\n\n"
        + _table(
            [
                "benchmark",
                "items indexed",
                "removed from seed and generated items",
                "removed from translations",
                "benchmark items found in the corpus",
            ],
            rows,
        )
        + (f"\n\nBenchmark items the removed items overlapped: {named}." if named else "")
    )


def _ccts(f: _Facts) -> str:
    if f.translations == "none":
        return ""
    if f.translations == "left out":
        return "## Translation and CCTS\n\nThe run's translations are left out of this upload."
    out = f.translate.get("outputs", {})
    params = f.translate.get("parameters", {}).get("ccts", {})
    scorer = out.get("scorer") or {}
    threshold = out.get("threshold")
    by_target: dict[str, list[dict[str, Any]]] = {}
    for row in f.scores:
        by_target.setdefault(row["target_lang"], []).append(row)
    targets = []
    for lang in _ordered(set(by_target)):
        rows = by_target[lang]
        done = [r for r in rows if r.get("ccts") is not None]
        kept = [r for r in rows if r.get("kept")]
        targets.append([_lang(lang), len(rows), len(done), len(kept), _mean(done, "ccts"), _mean(kept, "ccts")])
    done = [r for r in f.scores if r.get("ccts") is not None]
    kept = [r for r in f.scores if r.get("kept")]
    means = [
        [label, len(rs), _mean(rs, "ccts"), _mean(rs, "bleu"), _mean(rs, "bertscore")]
        for label, rs in (("all complete round trips", done), ("kept", kept))
    ]
    reasons = sorted(Counter(r.get("reason") for r in f.scores).items(), key=lambda kv: (-kv[1], str(kv[0])))
    guard = "on" if params.get("meaning_guard") else "off" if params else "not recorded"
    language_check = "on" if params.get("check_target_language") else "off" if params else "not recorded"
    limit = params.get("max_source_samples")
    chosen = f"The first {limit}" if limit else "The"
    return (
        "## Translation and CCTS\n\n"
        f"{chosen} `{params.get('source_language', '?')}` items of the dataset were translated into each other "
        f"language and back. A round trip is kept when CCTS = `{scorer.get('formula', '?')}` (BLEU and BERTScore "
        f"F1 of the back-translation against the source) is at least **{threshold}**, the meaning guard finds no "
        f"changed number, unit, negation, opposite or medical term (guard: {guard}), the translation is in the "
        f"target language (check: {language_check}) and it overlaps no benchmark item. Kept: {len(kept)} of "
        f"{len(f.scores)} round trips.\n\n"
        + _table(
            ["target language", "round trips", "complete", "kept", "mean CCTS (complete)", "mean CCTS (kept)"], targets
        )
        + "\n\n"
        + _table(["round trips", "n", "mean CCTS", "mean BLEU", "mean BERTScore F1"], means)
        + "\n\n"
        + _table(["round-trip outcome", "round trips"], reasons)
        + "\n\nTranslator:\n\n"
        + _table(["setting", "value"], (out.get("translator") or {}).items())
        + "\n\nScorer:\n\n"
        + _table(["setting", "value"], scorer.items())
    )


def _making(f: _Facts) -> str:
    out = f.generate.get("outputs", {})
    hashes = out.get("prompts_sha256") or {}
    steps = list(dict.fromkeys(k.split("/", 1)[1] for k in hashes))
    langs = _ordered({k.split("/", 1)[0] for k in hashes})
    prompts = [[_lang(x), *(f"`{hashes.get(f'{x}/{s}', '')}`" for s in steps)] for x in langs]
    packages = f.generate.get("packages", {})
    return (
        "## How it was made\n\n"
        f"Profile `{f.generate.get('profile')}`, seed {f.generate.get('seed')}, mmed-course "
        f"{packages.get('mmed-course', '?')} (datasets {packages.get('datasets', '?')}, transformers "
        f"{packages.get('transformers', '?')}); notebook {step_folder('generate')} finished at "
        f"{f.generate.get('created', '?')}.\n\nGenerator:\n\n"
        + _table(["setting", "value"], (out.get("backend") or {}).items())
        + "\n\nGeneration settings (`datagen` of the profile):\n\n"
        + _table(["setting", "value"], (f.generate.get("parameters", {}).get("datagen") or {}).items())
        + "\n\nPrompts (SHA-256 of each prompt file):\n\n"
        + _table(["prompt language", *steps], prompts)
    )


def _use(f: _Facts, repo_id: str | None) -> str:
    return (
        "## Use\n\n```python\nfrom datasets import load_dataset\n\n"
        f'ds = load_dataset("{repo_id or "<namespace>/<name>"}", split="train")\n'
        + (
            'ds = ds.filter(lambda r: r["origin"] != "translated" or r["ccts"] >= 0.9)  # a stricter CCTS\n'
            if f.translations == "included"
            else ""
        )
        + "```\n\n`messages` is what supervised fine-tuning trains on; `origin` tells hand-written seeds, generated "
        "items and translations apart."
    )


# --------------------------------------------------------------------------- Markdown helpers


def _ordered(codes: set[str]) -> list[str]:
    """Course languages in course order, then any others sorted."""
    return [c for c in LANGUAGES if c in codes] + sorted(codes - set(LANGUAGES))


def _lang(code: str) -> str:
    return f"{TABLE[code].name} ({code})" if code in TABLE else code


def _mean(rows: Sequence[dict[str, Any]], key: str, digits: int = 3) -> str | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return f"{statistics.fmean(values):.{digits}f}" if values else None


def _inline(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)


def _public(text: str) -> str:
    """``text`` without the folders of the machine that made the run: an absolute path becomes ``…/<name>``."""
    return _ABSOLUTE.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


_ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:[^\s/`'\",|)]+/)+[^\s/`'\",|)]*")


def _cell(value: Any) -> str:
    text = "–" if value is None or value == "" else _public(_inline(value))
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the upload


def prepare_upload(
    run: RunLayout,
    kind: str,
    out_dir: str | Path,
    *,
    license: str = "other",
    include_translations: bool = True,
    repo_id: str | None = None,
) -> Path:
    """Write the Hub layout of dataset ``kind`` into ``out_dir`` (``run.publish_folder(kind)`` in a notebook):
    ``README.md``, the card of :func:`dataset_card`, and ``data/train-00000-of-00001.parquet``, the rows (the
    dataset's, then its kept translations unless ``include_translations`` is false). The folder is replaced as a
    whole (a kill leaves the previous one); one that holds anything else is refused."""
    out = Path(out_dir)
    if out.is_dir() and {p.name for p in out.iterdir()} - {CARD_FILE, DATA_DIR}:
        raise PublishError(f"{out} holds other files than an upload folder's; choose an empty or new folder")
    facts = _gather(run, kind, include_translations)
    dataset = records_dataset(facts.rows, kind, facts.score_columns)
    with atomic_directory(out) as tmp:
        (tmp / DATA_FILE).parent.mkdir(parents=True)
        dataset.to_parquet(str(tmp / DATA_FILE))
        (tmp / CARD_FILE).write_text(_card(facts, license, repo_id), encoding="utf-8")
    return out


def _offline_switches() -> list[str]:
    """The variables that keep ``huggingface_hub`` off the network in this process (it reads them at import)."""
    from huggingface_hub import constants

    on = [
        name
        for name, is_on in (("HF_HUB_OFFLINE", hub_offline()), ("TRANSFORMERS_OFFLINE", flag("TRANSFORMERS_OFFLINE")))
        if is_on
    ]
    if not on and constants.HF_HUB_OFFLINE:
        on = ["HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE (when huggingface_hub was imported)"]
    return on


def push_to_hub(
    run: RunLayout,
    kind: str,
    repo_id: str,
    *,
    token_env: str = "HF_TOKEN",
    private: bool = True,
    license: str = "other",
    include_translations: bool = True,
) -> str:
    """Upload dataset ``kind`` with its card (:func:`prepare_upload`) to the Hub dataset ``repo_id``, created
    ``private`` if it does not exist (an existing one keeps its visibility; its ``data/`` files are replaced);
    returns the dataset's URL.

    The token is read only from the environment variable ``token_env`` (a write token). Both checks, the token
    and the Hub being reachable (``HF_HUB_OFFLINE``, which offline profiles such as ``smoke`` set), fail before
    anything is prepared or sent."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise PublishError(
            f"no Hugging Face token: the environment variable {token_env} is not set. Create a token with write "
            f"access at {TOKEN_URL} and set it (`export {token_env}=hf_...` before starting Python); it is read "
            "from the environment only, never from an argument or a file"
        )
    offline = _offline_switches()
    if offline:
        raise PublishError(
            f"the Hugging Face Hub is switched off in this process ({', '.join(offline)} set; an offline profile "
            "such as smoke sets it): unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE and start a new Python process "
            "(huggingface_hub reads them when it is imported), then push again; nothing was sent"
        )
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="mmed-publish-") as tmp:
        folder = prepare_upload(
            run,
            kind,
            Path(tmp) / "upload",
            license=license,
            include_translations=include_translations,
            repo_id=repo_id,
        )
        api = HfApi(token=token)
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=url.repo_id,
            folder_path=folder,
            repo_type="dataset",
            commit_message=f"Upload {NAMES[kind]} and its card (mmed-course)",
            delete_patterns=[f"{DATA_DIR}/*"],  # an older upload's other shards would join the split
        )
    return str(url)
