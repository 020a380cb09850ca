"""Step 02 (notebook ``02_translate_ccts``), multilingual expansion: translate samples source -> target ->
source and keep those whose CCTS passes.

Translators share one interface, ``translate(texts, src, tgt) -> list[Completion]``:

* :class:`LLMTranslator` - a prompted chat model through the generation backends of notebook 01 (a local model
  or any OpenAI-compatible endpoint); the prompt is ``mmed_helpers/data/prompts/translate.yaml``;
* :class:`Seq2SeqTranslator` - a transformers seq2seq MT model, batched: NLLB-200 (``eng_Latn`` ...), M2M-100
  (``en`` ...) or Marian (one model per language pair, ``Helsinki-NLP/opus-mt-{src}-{tgt}``).

Each sample's fields (question, answer; or question, every option, rationale) are translated separately, so
the structure survives. The cycle is resumable exactly like generation: forward and backward translations are
appended to ``raw/forward.jsonl`` and ``raw/backward.jsonl`` under stable ids
(``<sample id>|<target>|<field>``), and a rerun translates nothing twice. CCTS is then computed on the joined
fields of the source and of the back-translation, and samples with CCTS >= the threshold that pass the meaning
guard (``ccts.meaning_guard``: numbers, units, negations, opposite and medical terms unchanged) are kept, provided
the forward translation is in the target language (``ccts.check_target_language``: an untranslated copy would
otherwise pass with a perfect round trip)::

    >>> result = run_expansion(cfg, run, make_translator(cfg, base_model_path), CCTSScorer.from_config(cfg.ccts),
    ...                        {"ift": ift_items, "mc": mc_items})
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from ..core.artifacts import atomic_write_text
from ..core.config import SEQ2SEQ_STYLES, TRANSLATORS, Profile
from ..core.decontam import BenchmarkIndex, ContaminationReport, split_contaminated
from ..core.device import default_device
from ..core.jobs import Job, JsonlStore, claim_stores, run_jobs
from ..core.languages import TABLE
from ..core.layout import PROMPTS_DIR, RunLayout
from ..core.llm import Backend, Completion, GenerationParams, make_backend
from ..core.mcformat import LETTERS
from ..core.quality import is_language
from ..core.records import IFTSample, MCItem, Record, load_items, records_dataset, save_dataset
from .ccts import CCTSScore, CCTSScorer, decide

PROMPT_PATH = PROMPTS_DIR / "translate.yaml"
SCORE_COLUMNS = ("ccts", "bleu", "bertscore")


class TranslationError(ValueError):
    """A translator cannot be set up (unknown style, missing language code); the message says what to fix."""


class Translator(Protocol):
    def describe(self) -> dict[str, object]: ...

    def translate(self, texts: list[str], src: str, tgt: str) -> list[Completion]: ...


# --------------------------------------------------------------------------- prompted LLM


class LLMTranslator:
    """Translation by prompting a chat model (greedy decoding)."""

    def __init__(self, backend: Backend, max_new_tokens: int = 256, prompt_path: Path | str = PROMPT_PATH):
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        data = yaml.safe_load(Path(prompt_path).read_text(encoding="utf-8"))
        self.system, self.user = data["system"], data["user"]
        for ph in ("<<SOURCE>>", "<<TARGET>>", "<<TEXT>>"):
            if ph not in self.user:
                raise TranslationError(f"{prompt_path}: the user template needs the placeholder {ph}")

    def describe(self) -> dict[str, object]:
        return {"translator": "llm", **self.backend.describe(), "max_new_tokens": self.max_new_tokens}

    def messages(self, text: str, src: str, tgt: str) -> list[dict[str, str]]:
        user = (
            self.user.replace("<<SOURCE>>", TABLE[src].name if src in TABLE else src)
            .replace("<<TARGET>>", TABLE[tgt].name if tgt in TABLE else tgt)
            .replace("<<TEXT>>", text)
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def translate(self, texts: list[str], src: str, tgt: str) -> list[Completion]:
        params = GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        return self.backend.generate([self.messages(t, src, tgt) for t in texts], params)


# --------------------------------------------------------------------------- seq2seq MT models


class Seq2SeqTranslator:
    """A transformers seq2seq translation model, batched. ``style`` says how languages are named:
    ``nllb`` and ``m2m`` (one many-to-many model, target forced as the first generated token) or ``marian``
    (``model`` is a pattern with ``{src}`` and ``{tgt}``, one model per pair, loaded on first use)."""

    STYLES = SEQ2SEQ_STYLES

    def __init__(
        self,
        model: str | Path,
        style: str = "nllb",
        batch_size: int = 16,
        max_new_tokens: int = 256,
        device: str | None = None,
    ):
        if style not in self.STYLES:
            raise TranslationError(f"seq2seq style must be one of {self.STYLES}, got {style!r}")
        if style == "marian" and not ("{src}" in str(model) and "{tgt}" in str(model)):
            raise TranslationError(f"a Marian model needs a pattern with {{src}} and {{tgt}}, got {model!r}")
        self.model_name = str(model)
        self.style = style
        self.batch_size = max(1, batch_size)
        self.max_new_tokens = max_new_tokens
        self.device = device or default_device()
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def describe(self) -> dict[str, object]:
        return {"translator": "seq2seq", "model": self.model_name, "style": self.style, "device": self.device}

    def _load(self, name: str):
        if name not in self._loaded:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(name)
            model = AutoModelForSeq2SeqLM.from_pretrained(name).to(self.device).eval()
            self._loaded[name] = (tok, model)
        return self._loaded[name]

    def _codes(self, tok, lang: str) -> tuple[str, str]:
        """(the code the tokenizer's ``src_lang`` takes, the language token in the vocabulary): NLLB
        ``eng_Latn`` for both; M2M-100 ``en`` and ``__en__``."""
        row = TABLE.get(lang)
        code, token = (
            (None, None) if row is None else (row.nllb, row.nllb) if self.style == "nllb" else (row.m2m, row.m2m_token)
        )
        if token is None or tok.convert_tokens_to_ids(token) in (None, tok.unk_token_id):
            raise TranslationError(f"{self.model_name} has no {self.style} language code for {lang!r} ({token})")
        return code, token

    def prepare(self, texts: list[str], src: str, tgt: str):
        """(tokenizer, model, inputs, generation kwargs) for one language pair: the source language set on
        the tokenizer (or prefixed, for a tokenizer without ``src_lang``), the target forced as the first
        generated token."""
        if self.style == "marian":
            tok, model = self._load(self.model_name.format(src=src, tgt=tgt))
            return tok, model, list(texts), {}
        tok, model = self._load(self.model_name)
        (src_code, src_token), (_, tgt_token) = self._codes(tok, src), self._codes(tok, tgt)
        if hasattr(tok, "src_lang"):  # NllbTokenizer / M2M100Tokenizer place the source code themselves
            tok.src_lang = src_code
            inputs = list(texts)
        else:
            inputs = [f"{src_token} {t}" for t in texts]
        return tok, model, inputs, {"forced_bos_token_id": tok.convert_tokens_to_ids(tgt_token)}

    def _language_ids(self, tok) -> set[int]:
        """Ids of every course language's code token (stripped from outputs: M2M100Tokenizer keeps them when
        decoding with ``skip_special_tokens``)."""
        if self.style == "marian":
            return set()
        tokens = [row.nllb if self.style == "nllb" else row.m2m_token for row in TABLE.values()]
        return {i for i in tok.convert_tokens_to_ids(tokens) if i is not None and i != tok.unk_token_id}

    def translate(self, texts: list[str], src: str, tgt: str) -> list[Completion]:
        import torch

        tok, model, inputs, gen_kwargs = self.prepare(texts, src, tgt)
        drop = self._language_ids(tok)
        out: list[Completion] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True, truncation=True).to(self.device)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False, **gen_kwargs
                )
            rows = [[i for i in row.tolist() if i not in drop] for row in gen]
            for row in tok.batch_decode(rows, skip_special_tokens=True):
                out.append(Completion(row.strip()))
        return out


def make_translator(cfg: Profile, base_model_path: str | Path) -> Translator:
    """The translator the profile's ``ccts`` section asks for."""
    cc = cfg.ccts
    if cc.translator == "llm":
        dg = dataclasses.replace(
            cfg.datagen, generator_model=cc.translator_model or cfg.datagen.generator_model, batch_size=cc.batch_size
        )
        return LLMTranslator(make_backend(dg, base_model_path), cc.max_new_tokens)
    if cc.translator == "seq2seq":
        if not cc.translator_model:
            raise TranslationError("ccts.translator is seq2seq but ccts.translator_model is empty")
        return Seq2SeqTranslator(cc.translator_model, cc.seq2seq_style, cc.batch_size, cc.max_new_tokens)
    raise TranslationError(f"ccts.translator must be one of {TRANSLATORS}, got {cc.translator!r}")


# --------------------------------------------------------------------------- the cycle


def sample_fields(item: Record) -> dict[str, str]:
    """The fields of a sample that are translated, in a fixed order."""
    if isinstance(item, IFTSample):
        return {"question": item.question, "answer": item.answer}
    opts = {f"option_{LETTERS[i]}": o for i, o in enumerate(item.options)}
    return {"question": item.question, **opts, "rationale": item.rationale}


def rebuild(item: Record, fields: dict[str, str], lang: str) -> Record:
    """``item`` with translated ``fields``, in language ``lang``, marked as a translation of ``item``."""
    new_id = f"{item.id}|{lang}"
    if isinstance(item, IFTSample):
        return IFTSample(new_id, lang, fields["question"], fields["answer"], item.id, "translated", item.specialty)
    options = [fields[f"option_{LETTERS[i]}"] for i in range(len(item.options))]
    return MCItem(
        new_id,
        lang,
        fields["question"],
        options,
        item.answer,
        fields["rationale"],
        item.id,
        "translated",
        item.specialty,
    )


@dataclass
class PairResult:
    """One sample in one target language: its translation, back-translation and score."""

    kind: str
    source: Record
    target_lang: str
    translated: dict[str, str] | None
    back: dict[str, str] | None
    score: CCTSScore | None
    kept: bool
    reason: str
    """``kept``, ``below_threshold``, ``meaning_changed``, ``wrong_target_language``, ``benchmark_overlap`` or
    ``translation_failed``."""
    detail: str = ""
    """What the meaning guard found (``number: 24 -> 72``), or the score against the threshold."""

    @property
    def id(self) -> str:
        return f"{self.source.id}|{self.target_lang}"

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "source_id": self.source.id,
            "target_lang": self.target_lang,
            "bleu": self.score.bleu if self.score else None,
            "bertscore": self.score.bertscore if self.score else None,
            "ccts": self.score.ccts if self.score else None,
            "kept": self.kept,
            "reason": self.reason,
            "detail": self.detail,
            "source_text": "\n".join(sample_fields(self.source).values()),
            "translation": "\n".join(self.translated.values()) if self.translated else "",
            "back_translation": "\n".join(self.back.values()) if self.back else "",
        }


@dataclass
class ExpansionResult:
    out_dir: Path
    pairs: list[PairResult]
    kept: dict[str, list[Record]] = field(default_factory=dict)
    translated_now: int = 0
    recovered_lines: int = 0
    contamination: ContaminationReport | None = None
    """What the benchmark-overlap check removed from the translations that passed CCTS (None: not run)."""

    def rows(self) -> list[dict[str, Any]]:
        return [p.row() for p in self.pairs]


def select_sources(items: Sequence[Record], lang: str, limit: int) -> list[Record]:
    """The first ``limit`` items in ``lang`` (0 = all), in dataset order."""
    chosen = [it for it in items if it.lang == lang]
    return chosen[:limit] if limit > 0 else chosen


def _translate_all(
    jobs: list[Job], translator: Translator, store: JsonlStore, batch_size: int, progress: Callable[[int], None]
) -> int:
    """Run translation jobs grouped by language pair (a seq2seq batch must share its pair)."""
    done = 0
    pairs = sorted({(j.meta["src"], j.meta["tgt"]) for j in jobs})
    for src, tgt in pairs:
        group = [j for j in jobs if (j.meta["src"], j.meta["tgt"]) == (src, tgt)]
        done += run_jobs(
            group,
            lambda b, s=src, t=tgt: translator.translate([j.payload for j in b], s, t),
            store,
            batch_size,
            progress,
        )
    return done


def run_expansion(
    cfg: Profile,
    run: RunLayout,
    translator: Translator,
    scorer: CCTSScorer,
    datasets: dict[str, Sequence[Record]],
    progress: bool = True,
    benchmarks: BenchmarkIndex | None = None,
) -> ExpansionResult:
    """Translate the source-language samples of each dataset kind into every other profile language and back,
    score each pair with CCTS and the meaning guard, and save the kept translations (``run.ift_translated``,
    ``run.mc_translated``) and every score (``run.ccts_scores``) into the run.

    ``benchmarks``: a pair that passed is rejected as ``benchmark_overlap`` when its translation or its
    back-translation shares an n-gram with one of these evaluation items (notebook 02 passes
    :func:`~mmed_helpers.steps.benchmarks.decontamination_index`)."""
    cc = cfg.ccts
    targets = [lang for lang in cfg.languages if lang != cc.source_language]
    sources = {
        kind: select_sources(items, cc.source_language, cc.max_source_samples) for kind, items in datasets.items()
    }
    claim_stores(
        run.store_identity("translation_raw"),
        translation_identity(translator),
        fix="restore the translator's settings to resume, or delete that folder to translate again",
    )
    fwd_store = JsonlStore(run.translation_store("forward"))
    back_store = JsonlStore(run.translation_store("backward"))

    fwd_jobs = [
        Job(_job_id(it, tgt, name), text, {"src": cc.source_language, "tgt": tgt})
        for items in sources.values()
        for it in items
        for tgt in targets
        for name, text in sample_fields(it).items()
    ]
    translated_now = _translate_direction("forward ", fwd_jobs, translator, fwd_store, cc.batch_size, progress)
    back_jobs = [
        Job(j.id, _output(fwd_store, j.id), {"src": j.meta["tgt"], "tgt": cc.source_language})
        for j in fwd_jobs
        if _output(fwd_store, j.id)
    ]
    translated_now += _translate_direction("backward", back_jobs, translator, back_store, cc.batch_size, progress)

    pairs = _collect_pairs(sources, targets, fwd_store, back_store)
    _score_pairs([p for p in pairs if p.back is not None], scorer, cc)
    result = ExpansionResult(
        run.step_dir("translate"),
        pairs,
        translated_now=translated_now,
        recovered_lines=fwd_store.recovered + back_store.recovered,
    )
    if benchmarks is not None:
        result.contamination = _decontaminate([p for p in pairs if p.kept], benchmarks)
    _save_expansion(result, run)
    return result


def translation_identity(translator: Translator) -> dict[str, Any]:
    """What stored translations depend on beyond their job: the translator as it describes itself, without where
    it runs (device, batch size, endpoint address), and the prompt of an LLM translator."""
    described = {k: v for k, v in translator.describe().items() if k not in ("device", "batch_size", "base_url")}
    prompt = "\n".join(str(getattr(translator, part, "")) for part in ("system", "user"))
    return {"translator": described, "prompts": {"translate": hashlib.sha256(prompt.encode("utf-8")).hexdigest()}}


def _job_id(item: Record, tgt: str, field_name: str) -> str:
    return f"{item.id}|{tgt}|{field_name}"


def _output(store: JsonlStore, key: str) -> str | None:
    """The stored translation under ``key``, or None if it failed or is empty."""
    rec = store.records.get(key)
    return rec["output"] if rec and not rec.get("error") and rec["output"].strip() else None


def _translate_direction(
    desc: str, jobs: list[Job], translator: Translator, store: JsonlStore, batch_size: int, progress: bool
) -> int:
    """Run one direction's translation jobs with a progress bar; returns how many ran now."""
    from tqdm.auto import tqdm

    with tqdm(total=len(jobs), desc=desc, unit="text", disable=not progress) as bar:
        bar.update(sum(store.done(j.id) for j in jobs))
        return _translate_all(jobs, translator, store, batch_size, bar.update)


def _collect_pairs(
    sources: dict[str, list[Record]], targets: list[str], fwd_store: JsonlStore, back_store: JsonlStore
) -> list[PairResult]:
    """One :class:`PairResult` per sample and target language; ``back`` is set only for complete round trips."""
    pairs: list[PairResult] = []
    for kind, items in sources.items():
        for it in items:
            names = list(sample_fields(it))
            for tgt in targets:
                fwd = {n: _output(fwd_store, _job_id(it, tgt, n)) for n in names}
                back = {n: _output(back_store, _job_id(it, tgt, n)) for n in names}
                complete = all(fwd.values()) and all(back.values())
                pairs.append(
                    PairResult(
                        kind,
                        it,
                        tgt,
                        fwd if all(fwd.values()) else None,
                        back if complete else None,
                        None,
                        False,
                        "translation_failed",
                    )
                )
    return pairs


def _score_pairs(pairs: list[PairResult], scorer: CCTSScorer, cc) -> None:
    """Score complete round trips with CCTS and decide each one: kept, below threshold, meaning changed (the
    meaning guard) or wrong language."""
    sources = ["\n".join(sample_fields(p.source).values()) for p in pairs]
    backs = ["\n".join(p.back.values()) for p in pairs]
    scores = scorer.score(sources, backs, cc.source_language)
    decisions = decide(scores, sources, backs, cc.source_language, cc)
    for pr, sc, (reason, detail) in zip(pairs, scores, decisions, strict=True):
        pr.score = sc
        if cc.check_target_language and not is_language("\n".join(pr.translated.values()), pr.target_lang):
            # an untranslated copy makes a perfect round trip: CCTS alone would keep it
            pr.reason, pr.detail = "wrong_target_language", ""
        else:
            pr.reason, pr.detail = reason, detail
        pr.kept = pr.reason == "kept"


def _decontaminate(pairs: list[PairResult], index: BenchmarkIndex) -> ContaminationReport:
    """Reject kept pairs whose translation or back-translation shares an n-gram with a benchmark item."""
    report = ContaminationReport(n=index.n)
    _, dirty = split_contaminated(pairs, lambda p: [*p.translated.values(), *p.back.values()], index, report)
    for pair, found in dirty:
        pair.kept, pair.reason, pair.detail = False, "benchmark_overlap", ", ".join(found)
    return report


def _save_expansion(result: ExpansionResult, run: RunLayout) -> None:
    """Every score into ``run.ccts_scores``; the kept translations of each kind, with their scores, as datasets."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows()]
    atomic_write_text(run.ccts_scores, "".join(lines))
    for kind, path in (("ift", run.ift_translated), ("mc", run.mc_translated)):
        kept = [p for p in result.pairs if p.kind == kind and p.kept]
        result.kept[kind] = [rebuild(p.source, p.translated, p.target_lang) for p in kept]
        records = [
            {**item.to_record(), "ccts": p.score.ccts, "bleu": p.score.bleu, "bertscore": p.score.bertscore}
            for item, p in zip(result.kept[kind], kept, strict=True)
        ]
        save_dataset(records_dataset(records, kind, SCORE_COLUMNS), path)


# --------------------------------------------------------------------------- another threshold, no retranslation

THRESHOLD_DECIDED = ("kept", "below_threshold")
"""Decisions of notebook 02 that depend on the CCTS threshold; every other one (``translation_failed``,
``wrong_target_language``, ``meaning_changed``, ``benchmark_overlap``) holds at any threshold."""


def kept_at(row: dict[str, Any], threshold: float | None) -> bool:
    """Whether notebook 02 keeps the round trip of ``row`` (a line of ``run.ccts_scores``) at CCTS ``threshold``:
    a pair it decided by the threshold (``kept`` or ``below_threshold``) is kept when its CCTS is at least
    ``threshold``; the other checks hold whatever the threshold. ``None`` is no filter at all: every complete
    forward translation is kept (its round trip, language and meaning unchecked), except one that reproduces
    an evaluation item.

    >>> kept_at({"reason": "below_threshold", "ccts": 0.75, "translation": "x"}, 0.7)
    True
    """
    if threshold is None:
        return bool(row.get("translation")) and row.get("reason") != "benchmark_overlap"
    return row.get("reason") in THRESHOLD_DECIDED and row.get("ccts") is not None and row["ccts"] >= threshold


@dataclass
class Refiltered:
    """The translations notebook 02 would have kept at another threshold, from its stored scores and
    translations (nothing is translated or scored again)."""

    threshold: float | None
    """The CCTS threshold (``None``: no filter)."""
    kept: dict[str, list[Record]]
    """Per dataset kind (``ift``, ``mc``): the kept translations as records, as notebook 02 saves them."""
    scores: dict[str, list[dict[str, Any]]]
    """Per kind: the ``run.ccts_scores`` row of each kept translation, in the same order."""
    overlapping: int = 0
    """Pairs the threshold alone would admit that reproduce an evaluation item (rejected as in notebook 02)."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Per kind, kept translations per target language."""
        out: dict[str, dict[str, int]] = {}
        for kind, rows in self.scores.items():
            by = out.setdefault(kind, {})
            for r in rows:
                by[r["target_lang"]] = by.get(r["target_lang"], 0) + 1
        return out

    def ids(self) -> set[str]:
        return {r["id"] for rows in self.scores.values() for r in rows}

    def records(self, kind: str) -> list[dict[str, Any]]:
        """The kept translations of ``kind`` with their scores, as notebook 02 saves its own
        (``run.ift_translated``, ``run.mc_translated``; columns :data:`SCORE_COLUMNS` beside the record's)."""
        return [
            {**item.to_record(), **{c: row[c] for c in SCORE_COLUMNS}}
            for item, row in zip(self.kept[kind], self.scores[kind], strict=True)
        ]


def refilter(
    run: RunLayout,
    threshold: float | None,
    benchmarks: BenchmarkIndex | None = None,
) -> Refiltered:
    """Notebook 02's kept translations at CCTS ``threshold`` (:func:`kept_at`; ``None``: no filter), rebuilt from
    ``run.ccts_scores`` and the stored forward translations, with notebook 01's datasets as the sources. Pairs
    notebook 02 did not keep are checked against ``benchmarks`` (its decontamination) before they are admitted;
    without an index they are admitted unchecked. At notebook 02's own threshold this gives its kept sets."""
    from ..core.jsonl import read_jsonl

    rows = [line.record for line in read_jsonl(run.require("ccts_scores")) if not line.error]
    sources = {kind: {it.id: it for it in load_items(run.require(kind), kind)} for kind in ("ift", "mc")}
    forward = JsonlStore(run.translation_store("forward"))
    backward = JsonlStore(run.translation_store("backward"))
    admitted: list[tuple[PairResult, dict[str, Any]]] = []
    for row in rows:
        if not kept_at(row, threshold):
            continue
        source = sources.get(row["kind"], {}).get(row["source_id"])
        if source is None:
            raise TranslationError(
                f"{run.ccts_scores} names source {row['source_id']!r}, which notebook 01's {row['kind']} dataset no "
                "longer holds: run notebook 02 again"
            )
        names = list(sample_fields(source))
        fields = {n: _output(forward, _job_id(source, row["target_lang"], n)) for n in names}
        back = {n: _output(backward, _job_id(source, row["target_lang"], n)) for n in names}
        if not all(fields.values()):
            raise TranslationError(f"the stored translation of {row['id']} is incomplete: run notebook 02 again")
        pair = PairResult(row["kind"], source, row["target_lang"], fields, back, None, True, "kept")
        admitted.append((pair, row))
    overlapping = 0
    if benchmarks is not None:
        new = [p for p, row in admitted if row["reason"] != "kept"]
        report = ContaminationReport(n=benchmarks.n)
        _, dirty = split_contaminated(
            new, lambda p: [*p.translated.values(), *(v for v in p.back.values() if v)], benchmarks, report
        )
        dropped = {id(p) for p, _ in dirty}
        overlapping = len(dropped)
        admitted = [(p, row) for p, row in admitted if id(p) not in dropped]
    kept: dict[str, list[Record]] = {"ift": [], "mc": []}
    scores: dict[str, list[dict[str, Any]]] = {"ift": [], "mc": []}
    for pair, row in admitted:
        kept[pair.kind].append(rebuild(pair.source, pair.translated, pair.target_lang))
        scores[pair.kind].append(row)
    return Refiltered(threshold, kept, scores, overlapping)
