"""Step 01 (notebook ``01_generate_qa``): medical instruction data from unstructured text.

Condense -> generate -> parse -> filter -> dedup -> save.

The paper's two steps: (1) condense a passage into its key facts; (2) write instruction items from the condensed
text - free-form question + answer for MMed-IFT, and exam-style multiple choice with a rationale for
MMed-IFT-MC. Prompts are data files, one per step and language, each with a worked example
(``mmed_helpers/data/prompts/<lang>/{condense,ift,mc}.yaml``). Hand-written seed items
(``mmed_helpers/data/seeds/{ift,mc}/<lang>.jsonl``) join the generated ones.

Generation is resumable: every model output is appended to a JSONL file as soon as its batch finishes, under a
stable id ``<passage id>:<step>:<index>``; a rerun skips ids already there, and a line cut short by a kill is
dropped (and counted) on the next open. Filtering is a pure function of those files, so it can be rerun with
other thresholds without generating again::

    >>> result = run_datagen(cfg, RunLayout(run_dir), backend)   # what notebook 01 does, in one call
    >>> result.reports["ift"].kept, result.reports["ift"].rejected
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.config import DataGenConfig, Profile
from ..core.corpus import Passage
from ..core.decontam import BenchmarkIndex, ContaminationReport, split_contaminated
from ..core.ingest import load_passages
from ..core.jobs import Job, JsonlStore, claim_stores, run_jobs
from ..core.jsonl import read_jsonl
from ..core.layout import PROMPTS_DIR, SEEDS_DIR, RunLayout
from ..core.llm import Backend, Completion, GenerationParams
from ..core.mcformat import LETTERS, FormatError, answer_letters, options_list, relabel_letters
from ..core.quality import find_duplicates, is_language, support_score, text_length
from ..core.records import IFTSample, MCItem, Record, save_dataset, to_dataset

STEPS = ("condense", "ift", "mc")
PLACEHOLDER = {"condense": "<<PASSAGE>>", "ift": "<<CONDENSED>>", "mc": "<<CONDENSED>>"}

# Reasons an item is rejected, in the order the checks run (the report table uses this order).
REASONS = (
    "backend_error",
    "no_condensed_text",
    "unparseable",
    "empty_field",
    "too_short",
    "too_long",
    "mc_option_count",
    "mc_duplicate_options",
    "mc_bad_answer",
    "wrong_language",
    "unsupported_by_source",
    "benchmark_overlap",
    "exact_duplicate",
    "near_duplicate",
)


class DataGenError(ValueError):
    """A prompt or seed file is malformed (the message names the file)."""


# --------------------------------------------------------------------------- prompts


@dataclass
class PromptTemplate:
    step: str
    lang: str
    system: str
    user: str
    examples: list[dict[str, str]]
    path: Path

    def messages(self, text: str) -> list[dict[str, str]]:
        """System, the worked example as a previous turn, then the request for ``text``."""
        ph = PLACEHOLDER[self.step]
        msgs = [{"role": "system", "content": self.system}]
        for ex in self.examples:
            msgs.append({"role": "user", "content": self.user.replace(ph, ex["input"])})
            msgs.append({"role": "assistant", "content": ex["output"]})
        msgs.append({"role": "user", "content": self.user.replace(ph, text)})
        return msgs

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def load_prompt(step: str, lang: str, prompts_dir: Path | str = PROMPTS_DIR) -> PromptTemplate:
    """Load and check ``<prompts_dir>/<lang>/<step>.yaml``."""
    path = Path(prompts_dir) / lang / f"{step}.yaml"
    if not path.is_file():
        raise DataGenError(f"no {step} prompt for language {lang!r}: expected {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    missing = [k for k in ("system", "user", "examples") if k not in data]
    if missing:
        raise DataGenError(f"{path}: missing key(s) {missing}")
    ph = PLACEHOLDER[step]
    if data["user"].count(ph) != 1:
        raise DataGenError(f"{path}: the user template must contain {ph} exactly once")
    for ex in data["examples"]:
        if not isinstance(ex, dict) or not {"input", "output"} <= set(ex):
            raise DataGenError(f"{path}: every example needs 'input' and 'output'")
    return PromptTemplate(step, lang, data["system"], data["user"], list(data["examples"]), path)


# --------------------------------------------------------------------------- generation


def job_id(passage_id: str, step: str, index: int) -> str:
    """The stable id of a generation job (and of its output in the store): ``<passage>:<step>:<index>``."""
    return f"{passage_id}:{step}:{index}"


def prompt_job(jid: str, passage: Passage, step: str, index: int, text: str, prompts: dict) -> Job:
    """A chat job for ``step`` on ``passage``; ``text`` fills the prompt's placeholder."""
    key = (step, passage.lang)
    if key not in prompts:
        prompts[key] = load_prompt(step, passage.lang)
    meta = {"passage_id": passage.id, "lang": passage.lang, "step": step, "index": index}
    return Job(jid, prompts[key].messages(text), meta)


def chat_worker(backend: Backend, params: GenerationParams) -> Callable[[list[Job]], list[Completion]]:
    """A worker that sends each job's messages to ``backend``; the sampling seed follows the batch's first id,
    so a resumed run samples the same way."""

    def work(batch: list[Job]) -> list[Completion]:
        seed = None if params.seed is None else params.seed + _stable_int(batch[0].id)
        return backend.generate([j.payload for j in batch], dataclasses.replace(params, seed=seed))

    return work


def condense_jobs(passages: Sequence[Passage]) -> list[Job]:
    prompts: dict = {}
    return [prompt_job(job_id(p.id, "condense", 0), p, "condense", 0, p.text, prompts) for p in passages]


def item_jobs(kind: str, passages: Sequence[Passage], condensed: dict[str, str], per_passage: int) -> list[Job]:
    """Jobs for ``kind`` (``ift`` / ``mc``): ``per_passage`` per passage that has condensed text."""
    prompts: dict = {}
    return [
        prompt_job(job_id(p.id, kind, k), p, kind, k, condensed[p.id], prompts)
        for p in passages
        if condensed.get(p.id)
        for k in range(per_passage)
    ]


def condensed_texts(store: JsonlStore) -> dict[str, str]:
    """Passage id -> condensed text, from the condense step's store (empty or failed outputs left out)."""
    return {
        r["passage_id"]: r["output"].strip()
        for r in store.records.values()
        if r["step"] == "condense" and not r.get("error") and r["output"].strip()
    }


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


# --------------------------------------------------------------------------- parsing


class ParseError(ValueError):
    pass


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (code fences and chatter around it are tolerated)."""
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text)
    decoder = json.JSONDecoder()
    for cand in candidates:
        for i, ch in enumerate(cand):
            if ch == "{":
                try:
                    obj, _ = decoder.raw_decode(cand[i:])
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    return obj
    raise ParseError("no JSON object in the output")


def parse_ift(text: str) -> dict[str, str]:
    obj = extract_json(text)
    if not isinstance(obj.get("question"), str) or not isinstance(obj.get("answer"), str):
        raise ParseError("needs string fields 'question' and 'answer'")
    return {"question": obj["question"].strip(), "answer": obj["answer"].strip()}


def _answer_key(value: Any, n_options: int) -> str:
    """The answer as an MC item stores it: ``"B"``, or ``"A,C"`` for several; unreadable keys come back as they
    were (validation then rejects them as ``mc_bad_answer``)."""
    try:
        return ",".join(answer_letters(value.rstrip(". ") if isinstance(value, str) else value, n_options))
    except FormatError:
        return str(value).strip()


def parse_mc(text: str) -> dict[str, Any]:
    obj = extract_json(text)
    try:
        opts = options_list(obj.get("options"))
    except FormatError as exc:
        raise ParseError(str(exc)) from None
    for key in ("question", "answer", "rationale"):
        if not isinstance(obj.get(key), str) and not (key == "answer" and isinstance(obj.get(key), list)):
            raise ParseError(f"needs a string field {key!r}")
    return {
        "question": obj["question"].strip(),
        "options": opts,
        "answer": _answer_key(obj["answer"], len(opts)),
        "rationale": obj["rationale"].strip(),
    }


OUTPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "ift": {
        "type": "object",
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "answer"],
        "additionalProperties": False,
    },
    "mc": {
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "options": {
                "type": "object",
                "properties": {letter: {"type": "string"} for letter in LETTERS[:4]},
                "required": list(LETTERS[:4]),
                "additionalProperties": False,
            },
            "answer": {"type": "string", "enum": list(LETTERS[:4])},
            "rationale": {"type": "string"},
        },
        "required": ["question", "options", "answer", "rationale"],
        "additionalProperties": False,
    },
}
"""The JSON the IFT and MC prompts ask for (one question; four options A-D and one letter), as the schema an
endpoint is asked to follow (``datagen.structured_output``); :func:`parse_ift` and :func:`parse_mc` read it."""


def step_params(cfg: Profile, backend: Backend, step: str) -> GenerationParams:
    """The generation settings of ``step``: the profile's, with the step's JSON schema where an endpoint is
    asked for structured output."""
    dg = cfg.datagen
    schema = OUTPUT_SCHEMAS.get(step) if _structured(cfg, backend) else None
    return GenerationParams(dg.max_new_tokens, dg.temperature, dg.top_p, cfg.seed, schema)


def _structured(cfg: Profile, backend: Backend) -> bool:
    return cfg.datagen.structured_output and backend.name == "openai"


# --------------------------------------------------------------------------- validation and filtering


@dataclass
class FilterReport:
    """What filtering kept and dropped, per reason and language, with an example of each reason."""

    kind: str
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    by_language: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, dict[str, str]] = field(default_factory=dict)
    seeds: int = 0
    generated: int = 0
    contamination: ContaminationReport | None = None
    """What the benchmark-overlap check removed (None: not run)."""
    answer_balance: dict[str, Any] = field(default_factory=dict)
    """MC only: what :func:`balance_answer_letters` did (items moved, left as written, letters of the answers)."""
    structured: Counter = field(default_factory=Counter)
    """Endpoint outputs asked for with the JSON schema: ``with_schema`` / ``without_schema`` (the server refused
    it) and how many of each parsed (``parsed_with_schema``, ``parsed_without_schema``)."""

    def reject(self, reason: str, lang: str, rid: str, output: str) -> None:
        self.rejected[reason] += 1
        self.by_language.setdefault(lang, Counter())[reason] += 1
        self.examples.setdefault(reason, {"id": rid, "output": output[:300]})

    def keep(self, lang: str) -> None:
        self.kept += 1
        self.by_language.setdefault(lang, Counter())["kept"] += 1

    def rows(self) -> list[dict[str, Any]]:
        """One row per reason (and 'kept'), with per-language counts: the reject table."""
        langs = sorted(self.by_language)
        out = []
        for reason in ("kept", *REASONS):
            total = self.kept if reason == "kept" else self.rejected.get(reason, 0)
            row = {"kind": self.kind, "outcome": reason, "total": total}
            row.update({lang: self.by_language[lang].get(reason, 0) for lang in langs})
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "kept": self.kept,
            "seeds": self.seeds,
            "generated": self.generated,
            "rejected": dict(self.rejected),
            "by_language": {k: dict(v) for k, v in self.by_language.items()},
            "examples": self.examples,
            **({"contamination": self.contamination.to_dict()} if self.contamination else {}),
            **({"answer_balance": self.answer_balance} if self.answer_balance else {}),
            **({"structured_output": dict(self.structured)} if self.structured else {}),
        }


def check_lengths(fields: dict[str, str], cfg: DataGenConfig) -> str | None:
    """``empty_field`` / ``too_short`` / ``too_long`` for the first offending field, else None."""
    for value in fields.values():
        if not value.strip():
            return "empty_field"
    for value in fields.values():
        n = text_length(value)
        if n < cfg.min_chars:
            return "too_short"
        if n > cfg.max_chars:
            return "too_long"
    return None


def check_mc(item: dict[str, Any]) -> str | None:
    opts = item["options"]
    if not 4 <= len(opts) <= 5:
        return "mc_option_count"
    normed = [re.sub(r"\W+", "", o.casefold()) for o in opts]
    if len(set(normed)) != len(normed):
        return "mc_duplicate_options"
    try:
        letters = answer_letters(item["answer"], len(opts))
    except FormatError:
        return "mc_bad_answer"
    if ",".join(letters) != item["answer"]:  # stored keys are normalised: "A,C", never "ca" or "A, C"
        return "mc_bad_answer"
    return None


def validate(kind: str, fields: dict[str, Any], lang: str, source: str | None, cfg: DataGenConfig) -> str | None:
    """The first reason ``fields`` (a parsed item) fails, or None. ``source`` None skips the support check."""
    texts = {"question": fields["question"]}
    if kind == "ift":
        texts["answer"] = fields["answer"]
    else:
        texts.update({f"option {i}": o for i, o in enumerate(fields["options"])}, rationale=fields["rationale"])
    if reason := check_lengths({k: v for k, v in texts.items() if not k.startswith("option")}, cfg):
        return reason
    if any(not o.strip() for o in fields.get("options", [])):
        return "empty_field"
    if kind == "mc" and (reason := check_mc(fields)):
        return reason
    body = fields["question"] + " " + (fields["answer"] if kind == "ift" else fields["rationale"])
    if not is_language(body, lang):
        return "wrong_language"
    if source is not None:
        # IFT: the answer; MC: the correct option (the rationale may discuss distractors the text never names)
        claim = (
            fields["answer"]
            if kind == "ift"
            else " ".join(fields["options"][LETTERS.index(a)] for a in fields["answer"].split(","))
        )
        if support_score(claim, source) < cfg.support_threshold:
            return "unsupported_by_source"
    return None


def load_seeds(kind: str, languages: Iterable[str], seeds_dir: Path | str = SEEDS_DIR) -> list[Record]:
    """The hand-written seed items of ``kind`` for ``languages``."""
    items: list[Record] = []
    for lang in languages:
        path = Path(seeds_dir) / kind / f"{lang}.jsonl"
        if not path.is_file():
            raise DataGenError(f"no {kind} seeds for language {lang!r}: expected {path}")
        for line in read_jsonl(path):
            if line.error:
                raise DataGenError(f"{line.where}: malformed seed ({line.error})")
            try:
                items.append(_seed(kind, lang, line.record))
            except (KeyError, TypeError, FormatError) as exc:
                raise DataGenError(f"{line.where}: malformed seed ({type(exc).__name__}: {exc})") from None
    return items


def _seed(kind: str, lang: str, r: dict[str, Any]) -> Record:
    if kind == "ift":
        return IFTSample(r["id"], lang, r["question"], r["answer"], "", "seed", r.get("specialty", ""))
    return MCItem(
        r["id"],
        lang,
        r["question"],
        options_list(r["options"]),
        r["answer"],
        r["rationale"],
        "",
        "seed",
        r.get("specialty", ""),
    )


def filter_items(
    kind: str,
    raw: Iterable[dict[str, Any]],
    passages: dict[str, Passage],
    cfg: DataGenConfig,
    seeds: Sequence[Record] = (),
    condensed_missing: Iterable[Passage] = (),
    benchmarks: BenchmarkIndex | None = None,
) -> tuple[list[Record], FilterReport]:
    """Parse, validate, decontaminate (against ``benchmarks``, if given) and deduplicate generated outputs of
    ``kind``; seeds go first and win duplicates, and are decontaminated too.

    Every raw record ends up either kept or counted under exactly one reason in the report.
    """
    report = FilterReport(kind)
    for p in condensed_missing:
        report.reject("no_condensed_text", p.lang, job_id(p.id, "condense", 0), "")
    candidates = _valid_seeds(kind, seeds, cfg, report)
    report.seeds = len(candidates)
    generated, outputs = _valid_generated(kind, raw, passages, cfg, report)
    candidates += generated
    if benchmarks is not None:
        report.contamination = ContaminationReport(n=benchmarks.n)
        candidates, dirty = split_contaminated(candidates, record_texts, benchmarks, report.contamination)
        for item, _ in dirty:
            report.reject("benchmark_overlap", item.lang, item.id, outputs.get(item.id, item.question))
            report.seeds -= item.origin == "seed"
    return _deduplicate(candidates, outputs, cfg, report), report


def record_texts(item: Record) -> list[str]:
    """The texts of a training item the benchmark-overlap check reads: question and answer, or question,
    options and rationale."""
    if isinstance(item, IFTSample):
        return [item.question, item.answer]
    return [item.question, *item.options, item.rationale]


def balance_answer_letters(items: Sequence[Record], seed: int) -> tuple[list[Record], dict[str, Any]]:
    """Generated MC items with their options reordered so that the correct letters come out balanced.

    A generator writes the right answer where it likes (often first or second); a model trained on that learns
    "the answer is usually B". In order, each generated single-answer item gets its correct option moved to
    the letter used least so far (ties drawn from ``seed``), the other options shuffled around it; a
    multi-answer item gets its options shuffled. The rationale's letter references follow the options
    (:func:`~mmed_helpers.core.mcformat.relabel_letters`); an item whose rationale has a letter that cannot be
    told from a word stays as written. Seeds and translations are left alone. Returns the items and a summary:
    ``moved``, ``left_as_written`` and the count of each correct letter among the generated items."""
    rng = random.Random(seed)
    counts: Counter = Counter()
    out: list[Record] = []
    moved = unmoved = 0
    for item in items:
        if not isinstance(item, MCItem) or item.origin != "generated":
            out.append(item)
            continue
        letters = LETTERS[: len(item.options)]
        answers = item.answer.split(",")
        if len(answers) == 1:
            fewest = min(counts[x] for x in letters)
            target = rng.choice([x for x in letters if counts[x] == fewest])
            others = [x for x in letters if x != answers[0]]
            rng.shuffle(others)
            rest = iter(others)
            order = [answers[0] if x == target else next(rest) for x in letters]  # old letter at each new place
        else:
            order = rng.sample(letters, len(letters))
        mapping = {old: letters[i] for i, old in enumerate(order)}
        rationale = relabel_letters(item.rationale, mapping)
        if rationale is None:
            unmoved += 1
            counts.update(answers if len(answers) == 1 else [])
            out.append(item)
            continue
        new_answers = sorted(mapping[a] for a in answers)
        counts.update(new_answers if len(answers) == 1 else [])
        options = [item.options[LETTERS.index(old)] for old in order]
        out.append(dataclasses.replace(item, options=options, answer=",".join(new_answers), rationale=rationale))
        moved += 1
    return out, {"moved": moved, "left_as_written": unmoved, "answer_letters": dict(sorted(counts.items()))}


def _seed_fields(seed: Record) -> dict[str, Any]:
    if isinstance(seed, IFTSample):
        return {"question": seed.question, "answer": seed.answer}
    return {"question": seed.question, "options": seed.options, "answer": seed.answer, "rationale": seed.rationale}


def _valid_seeds(kind: str, seeds: Sequence[Record], cfg: DataGenConfig, report: FilterReport) -> list[Record]:
    """The seeds that pass validation (no source-support check: they are hand-written); the rest rejected."""
    kept = []
    for seed in seeds:
        fields = _seed_fields(seed)
        if reason := validate(kind, fields, seed.lang, None, cfg):
            report.reject(reason, seed.lang, seed.id, json.dumps(fields, ensure_ascii=False))
        else:
            kept.append(seed)
    return kept


def _valid_generated(
    kind: str, raw: Iterable[dict[str, Any]], passages: dict[str, Passage], cfg: DataGenConfig, report: FilterReport
) -> tuple[list[Record], dict[str, str]]:
    """Generated outputs of ``kind`` that parse and validate, as items, with their raw outputs by id."""
    parse = parse_ift if kind == "ift" else parse_mc
    items: list[Record] = []
    outputs: dict[str, str] = {}
    for rec in sorted(raw, key=lambda r: r["id"]):
        if rec["step"] != kind:
            continue
        report.generated += 1
        lang, rid, out = rec["lang"], rec["id"], rec.get("output") or ""
        if rec.get("error"):
            report.reject("backend_error", lang, rid, rec["error"])
            continue
        mode = {True: "with_schema", False: "without_schema"}.get(rec.get("structured"))
        if mode:
            report.structured[mode] += 1
        try:
            fields = parse(out)
        except ParseError:
            report.reject("unparseable", lang, rid, out)
            continue
        if mode:
            report.structured[f"parsed_{mode}"] += 1
        source = passages[rec["passage_id"]]
        if reason := validate(kind, fields, lang, source.text, cfg):
            report.reject(reason, lang, rid, out)
            continue
        items.append(_generated_item(kind, rid, lang, fields, source))
        outputs[rid] = out
    return items, outputs


def _generated_item(kind: str, rid: str, lang: str, fields: dict[str, Any], source: Passage) -> Record:
    if kind == "ift":
        return IFTSample(rid, lang, fields["question"], fields["answer"], source.id, "generated", source.specialty)
    return MCItem(
        rid,
        lang,
        fields["question"],
        fields["options"],
        fields["answer"],
        fields["rationale"],
        source.id,
        "generated",
        source.specialty,
    )


def _deduplicate(
    candidates: list[Record], outputs: dict[str, str], cfg: DataGenConfig, report: FilterReport
) -> list[Record]:
    """Drop exact and near duplicates of an earlier candidate (earlier wins: seeds come first)."""
    dups = find_duplicates([_dedup_text(c) for c in candidates], threshold=cfg.near_duplicate_threshold)
    kept = []
    for i, item in enumerate(candidates):
        if i in dups:
            how, _ = dups[i]
            report.reject(f"{how}_duplicate", item.lang, item.id, outputs.get(item.id, item.question))
            if item.origin == "seed":
                report.seeds -= 1
        else:
            kept.append(item)
            report.keep(item.lang)
    return kept


def _dedup_text(item: Record) -> str:
    return item.question if isinstance(item, IFTSample) else item.question + " " + " ".join(item.options)


# --------------------------------------------------------------------------- the whole step


@dataclass
class DatagenResult:
    out_dir: Path
    items: dict[str, list[Record]]
    reports: dict[str, FilterReport]
    generated_now: int
    recovered_lines: int
    backend: dict[str, object]


def open_stores(cfg: Profile, run: RunLayout, backend: Backend) -> dict[str, JsonlStore]:
    """The run's generation stores, one per step, once they are known to hold outputs of this generation (or
    nothing yet); else :class:`~mmed_helpers.core.jobs.StoreMismatch`, naming the fix."""
    claim_stores(
        run.store_identity("generation_raw"),
        generation_identity(cfg, backend),
        fix="restore those settings to resume, or delete that folder to generate again",
    )
    return {step: JsonlStore(run.generation_store(step)) for step in STEPS}


def run_datagen(
    cfg: Profile,
    run: RunLayout,
    backend: Backend,
    progress: bool = True,
    passages: Sequence[Passage] | None = None,
    benchmarks: BenchmarkIndex | None = None,
) -> DatagenResult:
    """Condense, generate, filter and save both datasets into the run (``run.ift``, ``run.mc``).

    ``benchmarks``: items sharing an n-gram with one of these evaluation items are removed
    (``benchmark_overlap``); notebook 01 passes :func:`~mmed_helpers.steps.benchmarks.decontamination_index`.
    Resumable: outputs already in the run's generation stores are not generated again.
    """
    dg = cfg.datagen
    if passages is None:
        passages, _ = load_passages(cfg, progress=progress)
    passages = list(passages)
    stores = open_stores(cfg, run, backend)
    recovered = sum(s.recovered for s in stores.values())
    jobs, generated = _generate_all(cfg, passages, backend, stores, progress)
    condensed = condensed_texts(stores["condense"])
    missing = [p for p in passages if p.id not in condensed]

    by_id = {p.id: p for p in passages}
    items, reports = {}, {}
    for kind in ("ift", "mc"):
        seeds = load_seeds(kind, cfg.languages) if dg.include_seeds else []
        wanted = {j.id for j in jobs[kind]}  # this run's items only, even if the store holds more
        raw = [r for r in stores[kind].records.values() if r["id"] in wanted]
        kept, report = filter_items(kind, raw, by_id, dg, seeds, missing, benchmarks)
        if kind == "mc":
            kept, report.answer_balance = balance_answer_letters(kept, cfg.seed)
        if not kept:
            raise DataGenError(f"no {kind} item survived filtering for {cfg.languages}; see the reject table")
        items[kind], reports[kind] = kept, report
    for kind, path in (("ift", run.ift), ("mc", run.mc)):  # both sets or neither: never one without the other
        save_dataset(to_dataset(items[kind], kind), path)
    return DatagenResult(run.step_dir("generate"), items, reports, generated, recovered, backend.describe())


@dataclass
class GenerationEstimate:
    """What notebook 01 is about to ask of its generator, and how long that should take on it.

    The speed is measured on the run's own first batches: one batch of condense prompts and one of item prompts
    (on the texts that batch condensed), generated with the run's settings and kept in its stores, so the
    measurement costs nothing. Each step's expected time is its pending prompts times the seconds per prompt
    of its batch (MC prompts as the item batch); expected output tokens take every reply to be as long as the
    measured ones of its kind, and ``output_tokens_max`` every reply ``max_new_tokens`` long."""

    rows: list[dict[str, Any]]
    """Per step: ``prompts``, ``pending`` (not yet in the store), ``input_tokens``, ``output_tokens``,
    ``output_tokens_max``, ``seconds`` (expected, for the pending prompts)."""
    probes: dict[str, dict[str, float]]
    """Per measured batch (``condense``, ``items``): ``prompts``, ``seconds``, ``output_tokens``."""

    def seconds(self) -> float:
        """Expected wall time of what is still pending (the measured batches are done already)."""
        return sum(r["seconds"] for r in self.rows)

    def summary(self) -> str:
        pending = sum(r["pending"] for r in self.rows)
        if not pending:
            return "nothing left to generate: every output is in the run's stores"
        measured = "; ".join(
            f"{k} {p['prompts']:.0f} prompts in {p['seconds']:.1f} s ({p['output_tokens'] / p['seconds']:.0f} "
            "output tokens/s)"
            for k, p in self.probes.items()
            if p["seconds"] > 0
        )
        return f"{pending} prompts to go; expected {_duration(self.seconds())} (measured: {measured or 'nothing'})"

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "probes": self.probes, "expected_s": self.seconds()}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def estimate_generation(
    cfg: Profile,
    run: RunLayout,
    backend: Backend,
    passages: Sequence[Passage],
    count: Callable[[str], int],
) -> GenerationEstimate:
    """Prompts, input and output tokens per step for ``passages``, and the time what is pending should take on
    ``backend``, from the run's first pending condense batch and item batch, generated now into the run's stores
    (``run_datagen`` then goes on from there). ``count`` counts tokens as the generator does
    (:func:`~mmed_helpers.core.ingest.token_counter`).

    Item prompts hold the condensed text: where it is not written yet it is taken to be as long as the measured
    condense replies."""
    import time

    dg = cfg.datagen
    stores = open_stores(cfg, run, backend)

    def probe(step: str, jobs: list[Job]) -> dict[str, float]:
        batch = [j for j in jobs if not stores[step].done(j.id)][: dg.batch_size]
        started = time.perf_counter()
        run_jobs(batch, chat_worker(backend, step_params(cfg, backend, step)), stores[step], dg.batch_size)
        seconds = time.perf_counter() - started
        out = sum(count(stores[step].records[j.id]["output"]) for j in batch)
        return {"prompts": len(batch), "seconds": seconds, "output_tokens": out}

    def prompt_tokens(job: Job) -> int:
        return sum(count(m["content"]) for m in job.payload)

    condense = condense_jobs(passages)
    probes = {"condense": probe("condense", condense)}
    condensed = condensed_texts(stores["condense"])
    first_items = item_jobs("ift", passages, condensed, dg.ift_per_passage)
    probes["items"] = (
        probe("ift", first_items)
        if dg.ift_per_passage
        else probe("mc", item_jobs("mc", passages, condensed, dg.mc_per_passage))
    )

    def mean(key: str, step_probe: dict[str, float], other: dict[str, float]) -> float:
        p = step_probe if step_probe["prompts"] else other
        return p[key] / p["prompts"] if p["prompts"] else 0.0

    c_probe, i_probe = probes["condense"], probes["items"]
    condensed_len = (
        sum(count(t) for t in condensed.values()) / len(condensed)
        if condensed
        else mean("output_tokens", c_probe, c_probe)
    )
    rows = [
        {
            "step": "condense",
            "prompts": len(condense),
            "pending": sum(not stores["condense"].done(j.id) for j in condense),
            "input_tokens": sum(prompt_tokens(j) for j in condense),
            "output_tokens": round(mean("output_tokens", c_probe, i_probe) * len(condense)),
            "output_tokens_max": dg.max_new_tokens * len(condense),
            "seconds_per_prompt": mean("seconds", c_probe, i_probe),
        }
    ]
    langs = Counter(p.lang for p in passages)
    for kind, per in (("ift", dg.ift_per_passage), ("mc", dg.mc_per_passage)):
        n = len(passages) * per
        done = sum(stores[kind].done(job_id(p.id, kind, k)) for p in passages for k in range(per))
        template = sum(
            sum(count(m["content"]) for m in load_prompt(kind, lang).messages("")) * k for lang, k in langs.items()
        )
        rows.append(
            {
                "step": kind,
                "prompts": n,
                "pending": max(0, n - done),
                "input_tokens": round(per * template + n * condensed_len),
                "output_tokens": round(mean("output_tokens", i_probe, c_probe) * n),
                "output_tokens_max": dg.max_new_tokens * n,
                "seconds_per_prompt": mean("seconds", i_probe, c_probe),
            }
        )
    for row in rows:
        row["seconds"] = row["pending"] * row.pop("seconds_per_prompt")
    return GenerationEstimate(rows, probes)


def _generate_all(
    cfg: Profile, passages: list[Passage], backend: Backend, stores: dict[str, JsonlStore], progress: bool
) -> tuple[dict[str, list[Job]], int]:
    """Run the three generation steps in order (items need the condensed texts); returns each step's jobs and
    how many outputs were generated now."""
    from tqdm.auto import tqdm

    dg = cfg.datagen
    per_passage = {"ift": dg.ift_per_passage, "mc": dg.mc_per_passage}
    generated = 0
    jobs_by_step: dict[str, list[Job]] = {}
    for step in STEPS:
        if step == "condense":
            jobs = condense_jobs(passages)
        else:
            jobs = item_jobs(step, passages, condensed_texts(stores["condense"]), per_passage[step])
        jobs_by_step[step] = jobs
        with tqdm(total=len(jobs), desc=f"{step:8s}", unit="item", disable=not progress) as bar:
            bar.update(sum(stores[step].done(j.id) for j in jobs))
            worker = chat_worker(backend, step_params(cfg, backend, step))
            generated += run_jobs(jobs, worker, stores[step], dg.batch_size, bar.update)
    return jobs_by_step, generated


def generation_identity(cfg: Profile, backend: Backend) -> dict[str, Any]:
    """What generated outputs depend on, beyond their job: the backend and model, the generation settings and
    the prompts (not the batch size, the device or the endpoint's address)."""
    described = backend.describe()
    dg = cfg.datagen
    return {
        "backend": described.get("backend"),
        "model": described.get("model"),
        "generation": {"max_new_tokens": dg.max_new_tokens, "temperature": dg.temperature, "top_p": dg.top_p},
        "seed": cfg.seed,
        "prompts": prompt_hashes(cfg.languages),
        **({"structured_output": OUTPUT_SCHEMAS} if _structured(cfg, backend) else {}),
    }


def prompt_hashes(languages: Iterable[str], prompts_dir: Path | str = PROMPTS_DIR) -> dict[str, str]:
    """SHA-256 of every prompt file used, keyed ``<lang>/<step>``."""
    return {f"{lang}/{step}": load_prompt(step, lang, prompts_dir).sha256() for lang in languages for step in STEPS}
