"""Step 05 (notebook ``05_evaluate``): multiple-choice evaluation on MedQA, MedMCQA, PubMedQA and MMedBench,
per language, with intervals and paired comparisons.

The items come from :mod:`~mmed_helpers.steps.benchmarks` (the public formats as distributed). **Two protocols**

* ``loglik`` - lm-evaluation-harness's multiple-choice protocol, with its own prompts (the built-in tasks
  ``medqa_4options``, ``medmcqa`` and ``pubmedqa``; :meth:`EvalItem.loglik_context`,
  :meth:`EvalItem.loglik_choices`): the prediction is the continuation with the highest summed log-probability
  (``acc``), or per character of the choice (``acc_norm``, the same as ``acc`` for single letters). Tokens are
  split as ``encode(context + continuation)[len(encode(context)):]`` with the tokenizer's default special
  tokens. When every choice is one token that extends the context cleanly, all choices are scored from one
  forward pass. Only the positions that predict a continuation token get logits and a log-softmax, so scoring an
  8B model's 128k vocabulary does not hold a ``batch x length x vocabulary`` float32 tensor. Multi-answer items
  (MMedBench Japanese/French) have no single-choice likelihood answer and are left to generation.
* ``generate`` - the item is asked in the model's chat template, in its own language, exactly as stage 2 trained
  on it (:func:`~mmed_helpers.core.mcformat.mc_prompt`); the answer letters are read from the reply
  (:func:`~mmed_helpers.core.mcformat.extract_answers`). An item is correct when the extracted set equals the
  gold set; a reply with no readable answer counts as wrong and is counted as an **extraction failure**.

Accuracy comes with a 95 % Wilson interval: on 20 items a model at 50 % could be anywhere from about 30 % to 70 %.
Two models scored on the same items are compared with an exact McNemar test (:func:`compare_models`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.config import PROTOCOLS
from ..core.device import default_device, resolve_dtype
from ..core.layout import RunLayout
from ..core.mcformat import extract_answers
from .benchmarks import EvalError, EvalItem

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
    """Characters of each choice without the target delimiter (the harness's ``acc_norm`` divisor)."""

    @property
    def pred(self) -> str:
        return self.item.letters[max(range(len(self.logliks)), key=lambda i: self.logliks[i])]

    @property
    def pred_norm(self) -> str:
        return self.item.letters[max(range(len(self.logliks)), key=lambda i: self.logliks[i] / self.lengths[i])]


def loglik_scores(
    model, tokenizer, items: Sequence[EvalItem], batch_size: int = 8, progress: bool = True, device: str | None = None
) -> list[ChoiceScores]:
    """Summed log-probability of each choice's continuation (:meth:`EvalItem.loglik_choices`) for every item."""
    import torch
    from tqdm.auto import tqdm

    device = device or str(next(model.parameters()).device)
    sequences = _loglik_sequences(tokenizer, items)
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
            wanted: list[list[int]] = []  # per row: the positions whose next-token distribution is needed
            for row, (_, seq, conts) in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                n = len(conts[0][1]) if len(conts) == 1 else 1
                wanted.append(list(range(len(seq) - n, len(seq))))
            keep = sorted({p for ps in wanted for p in ps})
            with torch.no_grad():
                logp = torch.log_softmax(_logits_at(model, ids.to(device), mask.to(device), keep).float(), -1)
            col = {p: k for k, p in enumerate(keep)}
            for row, (i, _seq, conts) in enumerate(chunk):
                for j, cont in conts:
                    if len(conts) > 1:  # fast path: every choice is the next token after the context
                        logliks[(i, j)] = float(logp[row, col[wanted[row][0]], cont[0]])
                    else:  # general path: the continuation's tokens at the end of the sequence
                        pairs = zip(wanted[row], cont, strict=True)
                        logliks[(i, j)] = float(sum(logp[row, col[p], t] for p, t in pairs))
            bar.update(len(chunk))
    return [
        ChoiceScores(
            item,
            [logliks[(i, j)] for j in range(len(item.options))],
            [len(c.lstrip(" ")) for c in item.loglik_choices()],
        )
        for i, item in enumerate(items)
    ]


def _loglik_sequences(tokenizer, items: Sequence[EvalItem]) -> list[tuple[int, list[int], list[tuple[int, list[int]]]]]:
    """(item index, input ids, [(choice index, continuation ids)]) to run: one sequence for an item whose
    choices are all single tokens after the same context, else one per choice (context + continuation[:-1])."""
    sequences = []
    for i, item in enumerate(items):
        pairs = [encode_pair(tokenizer, item.loglik_context(), c) for c in item.loglik_choices()]
        if all(len(cont) == 1 and ctx == pairs[0][0] for ctx, cont in pairs):
            sequences.append((i, pairs[0][0], [(j, cont) for j, (_, cont) in enumerate(pairs)]))
        else:
            sequences.extend((i, ctx + cont[:-1], [(j, cont)]) for j, (ctx, cont) in enumerate(pairs))
    return sequences


def _logits_at(model, ids, mask, positions: list[int]):
    """Logits at ``positions`` only (``batch x len(positions) x vocab``): through the model's
    ``logits_to_keep`` where it has one, else by indexing the full logits."""
    import torch

    keep = torch.tensor(positions, dtype=torch.long, device=ids.device)
    try:
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        if logits.shape[1] == len(positions):
            return logits
    except TypeError:  # a model class without logits_to_keep
        pass
    return model(input_ids=ids, attention_mask=mask).logits.index_select(1, keep)


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
    protocols: Sequence[str] = PROTOCOLS,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    progress: bool = True,
) -> list[ItemResult]:
    """Score ``items`` with each protocol; one :class:`ItemResult` per item and protocol (multi-answer items
    only under ``generate``)."""
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise EvalError(f"unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
    out: list[ItemResult] = []
    if "loglik" in protocols:
        out += _loglik_results(name, model, tokenizer, [it for it in items if not it.multi], batch_size, progress)
    if "generate" in protocols:
        out += _generate_results(name, model, tokenizer, items, batch_size, max_new_tokens, progress)
    return out


def _loglik_results(name, model, tokenizer, items, batch_size, progress) -> list[ItemResult]:
    out = []
    for s in loglik_scores(model, tokenizer, items, batch_size, progress):
        for proto, pred in (("loglik", s.pred), ("loglik_norm", s.pred_norm)):
            it = s.item
            out.append(ItemResult(name, it.benchmark, it.lang, proto, it.id, it.answers, [pred], [pred] == it.answers))
    return out


def _generate_results(name, model, tokenizer, items, batch_size, max_new_tokens, progress) -> list[ItemResult]:
    from tqdm.auto import tqdm

    from ..core.llm import GenerationParams, LocalBackend

    backend = LocalBackend.from_loaded(model, tokenizer, batch_size=batch_size, name=name)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    out = []
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
    """Tidy rows: model x benchmark x language x protocol with n, correct, accuracy, its 95 % interval, and the
    replies no answer could be read from (``unparsed``, ``unparsed_rate``; always 0 for log-likelihood)."""
    groups: dict[tuple[str, str, str, str], list[ItemResult]] = {}
    for r in results:
        groups.setdefault((r.model, r.benchmark, r.lang, r.protocol), []).append(r)
    rows = []
    for (model, bench, lang, proto), group in sorted(groups.items()):
        hits = sum(r.correct for r in group)
        unparsed = sum(not r.pred for r in group)
        lo, hi = wilson_interval(hits, len(group))
        rows.append(
            {
                "model": model,
                "benchmark": bench,
                "lang": lang,
                "protocol": proto,
                "n": len(group),
                "correct": hits,
                "accuracy": hits / len(group),
                "ci_low": lo,
                "ci_high": hi,
                "unparsed": unparsed,
                "unparsed_rate": unparsed / len(group),
            }
        )
    return rows


def _pooled(results: Iterable[ItemResult]) -> list[ItemResult]:
    return [ItemResult(r.model, r.benchmark, "all", r.protocol, r.item_id, r.gold, r.pred, r.correct) for r in results]


def summarize_overall(results: Iterable[ItemResult]) -> list[dict[str, Any]]:
    """Like :func:`summarize`, with every language of a benchmark pooled (``lang`` = ``all``)."""
    return summarize(_pooled(results))


# --------------------------------------------------------------------------- paired comparisons


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" the items only one model gets right split like
    fair coin flips, so ``min(only_a, only_b)`` is binomial(only_a + only_b, 1/2)."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_models(results: Iterable[ItemResult], models: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every pair of models on the items both answered, per benchmark, language (and ``all`` languages pooled)
    and protocol: accuracies, the discordant counts and the exact McNemar p-value."""
    results = list(results)
    names = list(models) if models else list(dict.fromkeys(r.model for r in results))
    table: dict[tuple[str, str, str], dict[str, dict[str, bool]]] = {}
    for r in results + _pooled(results):
        table.setdefault((r.benchmark, r.lang, r.protocol), {}).setdefault(r.model, {})[r.item_id] = r.correct
    rows = []
    for (bench, lang, proto), by_model in sorted(table.items()):
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if a not in by_model or b not in by_model:
                    continue
                shared = sorted(set(by_model[a]) & set(by_model[b]))
                if not shared:
                    continue
                ra, rb = by_model[a], by_model[b]
                only_a = sum(ra[k] and not rb[k] for k in shared)
                only_b = sum(rb[k] and not ra[k] for k in shared)
                rows.append(
                    {
                        "benchmark": bench,
                        "lang": lang,
                        "protocol": proto,
                        "model_a": a,
                        "model_b": b,
                        "n": len(shared),
                        "accuracy_a": sum(ra[k] for k in shared) / len(shared),
                        "accuracy_b": sum(rb[k] for k in shared) / len(shared),
                        "only_a": only_a,
                        "only_b": only_b,
                        "p_value": mcnemar_exact(only_a, only_b),
                    }
                )
    return rows


def describe_comparison(row: dict[str, Any], alpha: float = 0.05) -> str:
    """One sentence for a :func:`compare_models` row, saying whether the difference is evidence at ``alpha``."""
    a, b = row["model_a"], row["model_b"]
    where = f"{row['benchmark']} ({'all languages' if row['lang'] == 'all' else row['lang']}, {row['protocol']})"
    if row["p_value"] < alpha:
        better = a if row["only_a"] > row["only_b"] else b
        verdict = f"{better} is better at the {alpha:.0%} level"
    else:
        verdict = f"no evidence of a difference at the {alpha:.0%} level"
    return (
        f"{a} vs {b} on {where}: {100 * row['accuracy_a']:.1f}% vs {100 * row['accuracy_b']:.1f}% on "
        f"{row['n']} paired items; {row['only_a']} right only for {a}, {row['only_b']} only for {b}; "
        f"exact McNemar p = {row['p_value']:.3g}: {verdict}."
    )


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


def results_to_json(
    rows: list[dict], items: list[ItemResult], path: Path, comparisons: list[dict] | None = None
) -> Path:
    """``{"summary": rows, "comparisons": [...], "items": [...]}`` written atomically to ``path``."""
    from ..core.artifacts import atomic_write_text

    data = {"summary": rows, "comparisons": comparisons or [], "items": [asdict(i) for i in items]}
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


MODELS: dict[str, tuple[str, str | None]] = {
    "base": ("base", None),
    "stage1": ("stage1_merged", None),
    "stage2": ("stage1_merged", "stage2_adapter"),
    "single_stage": ("base", "single_stage_adapter"),
}
"""The models of the comparison: name -> (weights, adapter on top or None), as run artifacts (``base`` is the
base model notebook 00 recorded)."""


def evaluation_identity(
    model_dir: str | Path,
    adapter: str | Path | None,
    items: Sequence[EvalItem],
    protocols: Sequence[str],
    *,
    dtype: str,
    batch_size: int,
    max_new_tokens: int,
) -> dict[str, Any]:
    """What one model's scores depend on: the weights and adapter (:func:`model_identity`), every item's content,
    the protocols and the generation settings. Equal identities give equal scores."""
    from ..core.artifacts import model_identity

    content = json.dumps([asdict(it) for it in items], ensure_ascii=False, sort_keys=True)
    return {
        "model": model_identity(model_dir),
        "adapter": model_identity(adapter) if adapter else None,
        "items": hashlib.sha256(content.encode("utf-8")).hexdigest(),
        "n_items": len(items),
        "protocols": list(protocols),
        "dtype": dtype,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
    }


def evaluate_or_reuse(
    name: str,
    model_dir: str | Path,
    adapter: str | Path | None,
    items: Sequence[EvalItem],
    protocols: Sequence[str],
    store: str | Path,
    *,
    dtype: str = "auto",
    batch_size: int = 8,
    max_new_tokens: int = 32,
    progress: bool = True,
) -> tuple[list[ItemResult], bool]:
    """Model ``name``'s results on ``items``: read from ``store`` when it was scored there with the same
    :func:`evaluation_identity`, else loaded, scored with :func:`evaluate_model`, freed and saved to ``store``
    (atomically: a kill leaves the old file or the new one). Returns ``(results, reused)``."""
    import gc

    store = Path(store)
    identity = evaluation_identity(
        model_dir, adapter, items, protocols, dtype=dtype, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    saved = load_scores(store)
    if saved is not None and saved[0] == identity:
        return saved[1], True
    model, tok = load_eval_model(model_dir, adapter, dtype=dtype)
    try:
        results = evaluate_model(name, model, tok, items, protocols, batch_size, max_new_tokens, progress)
    finally:
        del model
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    save_scores(store, identity, results)
    return results, False


def save_scores(store: str | Path, identity: dict[str, Any], results: Sequence[ItemResult]) -> Path:
    """Write ``results`` with the :func:`evaluation_identity` they were scored under to ``store`` (atomically), as
    :func:`evaluate_or_reuse` reads them back."""
    from ..core.artifacts import atomic_write_text

    record = {"identity": identity, "results": [asdict(r) for r in results]}
    return atomic_write_text(store, json.dumps(record, ensure_ascii=False) + "\n")


def load_scores(store: str | Path) -> tuple[dict[str, Any], list[ItemResult]] | None:
    """``(identity, results)`` saved in ``store`` by :func:`evaluate_or_reuse`, or None when there is none."""
    store = Path(store)
    if not store.is_file():
        return None
    saved = json.loads(store.read_text(encoding="utf-8"))
    return saved.get("identity") or {}, [ItemResult(**r) for r in saved.get("results", [])]


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


def parse_rates(results: Sequence[ItemResult]) -> dict[str, float]:
    """Per model: the share of generation-protocol replies from which an answer could be read."""
    counts: dict[str, list[int]] = {}
    for r in results:
        if r.protocol == "generate":
            c = counts.setdefault(r.model, [0, 0])
            c[0] += bool(r.pred)
            c[1] += 1
    return {m: ok / n for m, (ok, n) in counts.items()}


def replies_side_by_side(
    results: Sequence[ItemResult], items: Sequence[EvalItem], per_language: int = 1
) -> list[dict[str, str]]:
    """For the first ``per_language`` items of each language: the question, the gold letter(s) and every
    model's generated reply with the letter read from it (``B`` / ``-`` when none)."""
    replies = {(r.model, r.item_id): r for r in results if r.protocol == "generate"}
    models = list(dict.fromkeys(r.model for r in results if r.protocol == "generate"))
    rows, seen = [], {}
    for it in items:
        if seen.get(it.lang, 0) >= per_language or not any((m, it.id) in replies for m in models):
            continue
        seen[it.lang] = seen.get(it.lang, 0) + 1
        row = {"benchmark": it.benchmark, "lang": it.lang, "question": it.question[:80], "gold": ",".join(it.answers)}
        for m in models:
            r = replies.get((m, it.id))
            row[m] = f"{r.raw.strip()[:60]!r} -> {','.join(r.pred) or '-'}" if r else ""
        rows.append(row)
    return rows
