"""Step 05 (notebook ``05_evaluate``): multiple-choice evaluation on MedQA, MedMCQA, PubMedQA and MMedBench,
per language.

**Loaders** turn each benchmark's public format into one :class:`EvalItem` type, from local files (JSON, JSONL
or Parquet; the course bundles small sets written in each format) or, online, from the Hugging Face Hub. A
record that does not fit its format is skipped and reported with its line number; it never stops a run.

**Two protocols**

* ``loglik`` - as EleutherAI's lm-evaluation-harness does it: the prompt ends in ``Answer:``, each choice is the
  continuation ``" A"``, ``" B"``, ...; the prediction is the choice with the highest summed log-probability
  (``acc``), or the highest log-probability per character of the choice (``acc_norm``, equal to ``acc`` for
  single letters). Tokens are split as ``encode(context + continuation)[len(encode(context)):]`` with the
  tokenizer's default special tokens. When every choice is one token that extends the context cleanly, all
  choices are scored from one forward pass. Multi-answer items (MMedBench Japanese/French) have no
  single-choice likelihood answer and are left to the generation protocol.
* ``generate`` - the item is asked in the model's chat template, in its own language, exactly as stage 2 trained
  on it (:func:`~mmed_helpers.core.mcformat.mc_prompt`); the answer letters are extracted from the reply
  (:func:`~mmed_helpers.core.mcformat.extract_answers`: (``Answer: B``, ``答案：C``, ``答え：A,C``, a leading
  ``B.`` ...)). An item is correct when the extracted set equals the gold set.

Accuracy comes with a 95 % Wilson interval: on 20 items a model at 50 % could be anywhere from about 30 % to 70 %.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.device import default_device, resolve_dtype
from ..core.jsonl import read_jsonl
from ..core.languages import TABLE
from ..core.layout import EVAL_DIR, RunLayout
from ..core.mcformat import LETTERS, FormatError, answer_letters, extract_answers, mc_prompt, option_lines, options_list

HUB = {
    "medqa": ("GBaker/MedQA-USMLE-4-options", None, "test"),
    "medmcqa": ("openlifescienceai/medmcqa", None, "validation"),
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled", "train"),
    "mmedbench": ("Henrychur/MMedBench", None, "test"),
}
BUNDLED = {
    "medqa": EVAL_DIR / "medqa" / "test.jsonl",
    "medmcqa": EVAL_DIR / "medmcqa" / "validation.jsonl",
    "pubmedqa": EVAL_DIR / "pubmedqa" / "pqa_labeled.jsonl",
    "mmedbench": EVAL_DIR / "mmedbench",
}


class EvalError(ValueError):
    """A benchmark source cannot be read at all (the message names it and the fix)."""


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

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    @property
    def multi(self) -> bool:
        return len(self.answers) > 1

    def loglik_context(self) -> str:
        """The lm-evaluation-harness style prompt; choices are the continuations ``" A"``, ``" B"``, ..."""
        head = f"Abstract: {self.context}\n" if self.context else ""
        return f"{head}Question: {self.question}\n{option_lines(self.options)}\nAnswer:"

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


def _text(rec: dict, key: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"missing or empty field {key!r}")
    return value.strip()


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


def convert(benchmark: str, rec: dict, rid: str, lang: str = "en") -> EvalItem:
    """One raw record of ``benchmark``'s public format as an :class:`EvalItem` (raises on a bad record)."""
    if not isinstance(rec, dict):
        raise _Bad("record is not a JSON object")
    if benchmark == "medqa":
        options = _options_dict(rec)
        if len(options) != 4:
            raise _Bad(f"MedQA-USMLE 4-option items need 4 options, got {len(options)}")
        answers = _letters(rec.get("answer_idx"), 4)
        if len(answers) != 1:
            raise _Bad("MedQA has one answer")
        return EvalItem(rid, "medqa", "en", _text(rec, "question"), options, answers)
    if benchmark == "medmcqa":
        options = [_text(rec, k) for k in ("opa", "opb", "opc", "opd")]
        cop = rec.get("cop")
        if not isinstance(cop, int) or isinstance(cop, bool) or not 0 <= cop <= 3:
            raise _Bad(f"cop must be an integer 0-3, got {cop!r}")
        return EvalItem(str(rec.get("id") or rid), "medmcqa", "en", _text(rec, "question"), options, [LETTERS[cop]])
    if benchmark == "pubmedqa":
        ctx = rec.get("context")
        if isinstance(ctx, dict):
            parts = ctx.get("contexts")
        else:
            parts = ctx
        if isinstance(parts, str):
            parts = [parts]
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
            raise _Bad("context.contexts must be a list of strings")
        decision = str(rec.get("final_decision", "")).strip().lower()
        if decision not in ("yes", "no", "maybe"):
            raise _Bad(f"final_decision must be yes, no or maybe, got {rec.get('final_decision')!r}")
        answer = LETTERS["yes no maybe".split().index(decision)]
        pid = str(rec.get("pubid") or rid)
        return EvalItem(
            pid,
            "pubmedqa",
            "en",
            _text(rec, "question"),
            ["yes", "no", "maybe"],
            [answer],
            context=" ".join(p.strip() for p in parts),
        )
    if benchmark == "mmedbench":
        options = _options_dict(rec)
        return EvalItem(
            rid, "mmedbench", lang, _text(rec, "question"), options, _letters(rec.get("answer_idx"), len(options))
        )
    raise EvalError(f"unknown benchmark {benchmark!r}; choose from {sorted(HUB)}")


# --------------------------------------------------------------------------- readers


def _mmedbench_file(lang: str) -> str:
    return TABLE[lang].mmedbench_file if lang in TABLE else lang


def read_records(path: Path) -> list[tuple[str, Any]]:
    """(``file:line``, record) pairs from a JSONL, JSON (list) or Parquet file. A JSONL line that is not valid
    JSON comes back as the record ``_Bad`` so the caller counts it."""
    if path.suffix == ".parquet":
        import pandas as pd

        return [(f"{path.name}:{i + 1}", r) for i, r in enumerate(pd.read_parquet(path).to_dict("records"))]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return [(f"{path.name}:{i + 1}", r) for i, r in enumerate(json.loads(text))]
    return [(line.where, _Bad(line.error) if line.error else line.record) for line in read_jsonl(path)]


def _convert_all(benchmark: str, records: Iterable[tuple[str, Any]], lang: str, result: LoadResult) -> None:
    for where, rec in records:
        if isinstance(rec, _Bad):
            result.skipped.append((where, str(rec)))
            continue
        rec = _plain(rec)
        try:
            result.items.append(convert(benchmark, rec, f"{benchmark}-{lang}-{where.rsplit(':', 1)[-1]}", lang))
        except _Bad as exc:
            result.skipped.append((where, str(exc)))


def _plain(rec: Any) -> Any:
    """numpy arrays and scalars (from Parquet) as plain Python values."""
    if isinstance(rec, dict):
        return {k: _plain(v) for k, v in rec.items()}
    if hasattr(rec, "tolist"):
        return _plain(rec.tolist())
    if isinstance(rec, list | tuple):
        return [_plain(v) for v in rec]
    return rec


def load_benchmark(
    benchmark: str, source: str | Path = "bundled", languages: Sequence[str] = ("en",), offline: bool = True
) -> LoadResult:
    """Load ``benchmark`` from ``source``: ``bundled`` (the course's small sets), a local file or folder in the
    benchmark's public format, or ``hub`` (the public dataset, online only). For MMedBench, ``languages`` picks
    the per-language files (``English.jsonl``, ``Chinese.jsonl``, ...)."""
    if benchmark not in HUB:
        raise EvalError(f"unknown benchmark {benchmark!r}; choose from {sorted(HUB)}")
    result = LoadResult([], source=str(source))
    if source == "hub":
        return _load_hub(benchmark, languages, offline, result)
    path = BUNDLED[benchmark] if source == "bundled" else Path(source).expanduser()
    if not path.exists():
        raise EvalError(f"{benchmark} source {path} not found; give a file or folder in its public format")
    if benchmark == "mmedbench":
        for lang in languages:
            name = _mmedbench_file(lang)
            files = [path] if path.is_file() else sorted(p for p in path.glob(f"{name}.*") if p.is_file())
            if not files:
                result.skipped.append((f"{path}/{name}.jsonl", "no file for this language"))
                continue
            _convert_all(benchmark, read_records(files[0]), lang, result)
        return result
    files = (
        [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".parquet"))
    )
    for f in files:
        _convert_all(benchmark, read_records(f), "en", result)
    return result


def _load_hub(benchmark: str, languages: Sequence[str], offline: bool, result: LoadResult) -> LoadResult:
    if offline:
        raise EvalError(
            f"{benchmark}: source 'hub' needs network access; this run is offline. Download the "
            "dataset once and give its local folder, or use 'bundled'"
        )
    repo, config, split = HUB[benchmark]
    if benchmark == "mmedbench":
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(repo, repo_type="dataset"))
        for lang in languages:
            found = sorted(root.rglob(f"{_mmedbench_file(lang)}.jsonl"))
            test = [p for p in found if "test" in str(p).lower()] or found
            if not test:
                result.skipped.append((f"{repo}/{_mmedbench_file(lang)}.jsonl", "not in the download"))
                continue
            _convert_all(benchmark, read_records(test[0]), lang, result)
        return result
    from datasets import load_dataset

    ds = load_dataset(repo, config, split=split)
    _convert_all(benchmark, ((f"{repo}[{i}]", r) for i, r in enumerate(ds)), "en", result)
    return result


# --------------------------------------------------------------------------- scoring: log-likelihood


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (well-behaved at 0, 1 and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's split: trailing spaces move to the continuation; the continuation's tokens are
    ``encode(context + continuation)[len(encode(context)):]`` with the tokenizer's default special tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx) :]


@dataclass
class ChoiceScores:
    item: EvalItem
    logliks: list[float]
    lengths: list[int]

    @property
    def pred(self) -> str:
        return LETTERS[max(range(len(self.logliks)), key=lambda i: self.logliks[i])]

    @property
    def pred_norm(self) -> str:
        return LETTERS[max(range(len(self.logliks)), key=lambda i: self.logliks[i] / self.lengths[i])]


def loglik_scores(
    model, tokenizer, items: Sequence[EvalItem], batch_size: int = 8, progress: bool = True, device: str | None = None
) -> list[ChoiceScores]:
    """Summed log-probability of each choice's continuation for every single-answer item."""
    import torch
    from tqdm.auto import tqdm

    device = device or str(next(model.parameters()).device)
    requests = []  # (item index, choice index, context ids, continuation ids)
    for i, item in enumerate(items):
        for j, letter in enumerate(item.letters):
            ctx, cont = encode_pair(tokenizer, item.loglik_context(), f" {letter}")
            requests.append((i, j, ctx, cont))
    # fast path: items whose choices are all one token after the same context need one forward pass
    by_item: dict[int, list] = {}
    for r in requests:
        by_item.setdefault(r[0], []).append(r)
    single = {i for i, rs in by_item.items() if all(len(r[3]) == 1 and r[2] == rs[0][2] for r in rs)}
    sequences: list[tuple[int, list[int], list[tuple[int, list[int]]]]] = []  # (item, input ids, [(choice, cont)])
    for i, rs in by_item.items():
        if i in single:
            sequences.append((i, rs[0][2], [(r[1], r[3]) for r in rs]))
        else:
            sequences.extend((i, r[2] + r[3][:-1], [(r[1], r[3])]) for r in rs)
    logliks: dict[tuple[int, int], float] = {}
    order = sorted(range(len(sequences)), key=lambda k: -len(sequences[k][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    with tqdm(total=len(order), desc="log-likelihood", unit="seq", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = [sequences[k] for k in order[start : start + batch_size]]
            width = max(len(s[1]) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (_, seq, _) in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            with torch.no_grad():
                logp = torch.log_softmax(
                    model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1
                )
            for row, (i, seq, conts) in enumerate(chunk):
                for j, cont in conts:
                    if len(conts) > 1:  # fast path: every choice is the next token after the context
                        logliks[(i, j)] = float(logp[row, len(seq) - 1, cont[0]])
                    else:  # general path: the continuation's tokens at the end of the sequence
                        n = len(cont)
                        positions = range(len(seq) - n, len(seq))
                        logliks[(i, j)] = float(sum(logp[row, p, t] for p, t in zip(positions, cont, strict=True)))
            bar.update(len(chunk))
    return [
        ChoiceScores(item, [logliks[(i, j)] for j in range(len(item.options))], [len(f" {x}") for x in item.letters])
        for i, item in enumerate(items)
    ]


# --------------------------------------------------------------------------- scoring: generation


# --------------------------------------------------------------------------- running


@dataclass
class ItemResult:
    model: str
    benchmark: str
    lang: str
    protocol: str
    item_id: str
    gold: list[str]
    pred: list[str]
    correct: bool
    raw: str = ""


def evaluate_model(
    name: str,
    model,
    tokenizer,
    items: Sequence[EvalItem],
    protocols: Sequence[str] = ("loglik", "generate"),
    batch_size: int = 8,
    max_new_tokens: int = 32,
    progress: bool = True,
) -> list[ItemResult]:
    """Score ``items`` with each protocol; one :class:`ItemResult` per item and protocol (multi-answer items
    only under ``generate``)."""
    out: list[ItemResult] = []
    if "loglik" in protocols:
        single = [it for it in items if not it.multi]
        for s in loglik_scores(model, tokenizer, single, batch_size, progress):
            for proto, pred in (("loglik", s.pred), ("loglik_norm", s.pred_norm)):
                out.append(
                    ItemResult(
                        name,
                        s.item.benchmark,
                        s.item.lang,
                        proto,
                        s.item.id,
                        s.item.answers,
                        [pred],
                        [pred] == s.item.answers,
                    )
                )
    if "generate" in protocols:
        from tqdm.auto import tqdm

        from ..core.llm import GenerationParams, LocalBackend

        backend = LocalBackend.from_loaded(model, tokenizer, batch_size=batch_size, name=name)
        params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
        with tqdm(total=len(items), desc="generate", unit="item", disable=not progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                replies = backend.generate([[{"role": "user", "content": it.chat_prompt()}] for it in chunk], params)
                for it, reply in zip(chunk, replies, strict=True):
                    pred = extract_answers(reply.text, len(it.options))
                    out.append(
                        ItemResult(
                            name,
                            it.benchmark,
                            it.lang,
                            "generate",
                            it.id,
                            it.answers,
                            pred,
                            pred == it.answers,
                            reply.text[:300],
                        )
                    )
                bar.update(len(chunk))
    return out


def summarize(results: Iterable[ItemResult]) -> list[dict[str, Any]]:
    """Tidy rows: model x benchmark x language x protocol with n, correct, accuracy and its 95 % interval."""
    groups: dict[tuple[str, str, str, str], list[bool]] = {}
    for r in results:
        groups.setdefault((r.model, r.benchmark, r.lang, r.protocol), []).append(r.correct)
    rows = []
    for (model, bench, lang, proto), hits in sorted(groups.items()):
        lo, hi = wilson_interval(sum(hits), len(hits))
        rows.append(
            {
                "model": model,
                "benchmark": bench,
                "lang": lang,
                "protocol": proto,
                "n": len(hits),
                "correct": sum(hits),
                "accuracy": sum(hits) / len(hits),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return rows


def load_eval_model(path: str | Path, adapter: str | Path | None = None, dtype: str = "auto"):
    """A model for evaluation (transformers, no Unsloth): ``path``, plus a LoRA adapter on top if given."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(adapter or path))
    device = default_device()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(dtype, device)).to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval(), tok


def results_to_json(rows: list[dict], items: list[ItemResult], path: Path) -> Path:
    from ..core.artifacts import atomic_write_text

    return atomic_write_text(
        path, json.dumps({"summary": rows, "items": [asdict(i) for i in items]}, ensure_ascii=False, indent=1) + "\n"
    )


def summarize_overall(results: Iterable[ItemResult]) -> list[dict[str, Any]]:
    """Like :func:`summarize`, with every language of a benchmark pooled (``lang`` = ``all``)."""
    pooled = [
        ItemResult(r.model, r.benchmark, "all", r.protocol, r.item_id, r.gold, r.pred, r.correct) for r in results
    ]
    return summarize(pooled)


MODELS: dict[str, tuple[str, str | None]] = {
    "base": ("base", None),
    "stage1": ("stage1_merged", None),
    "stage2": ("stage1_merged", "stage2_adapter"),
    "single_stage": ("base", "single_stage_adapter"),
}
"""The models of the comparison: name -> (weights, adapter on top or None), as run artifacts (``base`` is the
base model notebook 00 recorded)."""


def model_sources(run: RunLayout, names: Sequence[str]) -> dict[str, tuple[Path, Path | None]]:
    """Where each model of the comparison lives in the run: ``name -> (model dir, adapter dir or None)``.

    ``base`` (notebook 00), ``stage1`` (the merged model of notebook 03), ``stage2`` (stage 1 + the adapter of
    notebook 04), ``single_stage`` (base + the ablation adapter trained in notebook 05). A missing one raises
    the layout's error naming the notebook to run."""
    out = {}
    for name in names:
        if name not in MODELS:
            raise EvalError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
        weights, adapter = MODELS[name]
        model_dir = Path(run.base_model().path) if weights == "base" else run.require(weights)
        out[name] = (model_dir, run.require(adapter) if adapter else None)
    return out
