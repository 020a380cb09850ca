"""Check functions for the notebooks' exercises: the learner computes an answer, calls the check, and reads a
verdict (right, or a hint toward the right answer, never the answer itself). Each check computes the true
value from the real objects (the model's config, the shipped data, the course's own functions), so it stays
right when they change. Called with ``None`` (the placeholder in each notebook's check cell) a check only says
what to do, so the notebooks run end to end unchanged.

    >>> from mmed_helpers.exercises import check_mcnemar_items
    >>> check_mcnemar_items(3)
    ✗ Not yet: at 3 the exact McNemar p-value is 0.25, not below 0.05: keep growing k.
    >>> bool(check_mcnemar_items(None))
    False

At least one check per notebook, beside the exercise it checks:

========================================  ==================================================================
:func:`check_dora_parameters`             00, exercise 3: parameters a DoRA adapter (r = 32) adds to a model
:func:`check_long_answer_seeds`           01, exercise 3: seed MC items whose correct option is "too long"
:func:`check_mean_score_kept`             02, exercise 1: faithful round trips the equal-weight mean keeps
:func:`check_dora_extra_parameters`       03, exercise 1: what DoRA adds over LoRA
:func:`check_frozen_weight_memory`        04, exercise 1: the 8B model's frozen weights in bf16 and in NF4
:func:`check_mcnemar_items`               05, exercise 2: discordant items for an exact McNemar p < 0.05
:func:`check_rank_parameters`             06, exercise 1: parameters a stage-1 DoRA adapter of rank 64 adds over 32
========================================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.config import StageConfig, load_profile
from .core.languages import LANGUAGES
from .core.mcformat import LETTERS


@dataclass(frozen=True)
class Verdict:
    """What a check says: truthy when the answer is right; shows as its message (in a notebook, as the cell's
    output)."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def _right(why: str = "") -> Verdict:
    return Verdict(True, "✓ Right." + (f" {why}" if why else ""))


def _wrong(hint: str) -> Verdict:
    return Verdict(False, f"✗ Not yet: {hint}")


def _no_answer(what: str) -> Verdict:
    return Verdict(False, f"No answer yet: replace None with {what} and run the cell again.")


def _number(answer: Any) -> float | None:
    """The answer as a number, or None when it is not one (a string like "1,234" is accepted)."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, str):
        try:
            return float(answer.replace(",", "").replace("_", "").strip())
        except ValueError:
            return None
    return float(answer) if isinstance(answer, int | float) else None


# --------------------------------------------------------------------------- what an adapter adds to a model


def _meta_model(config):
    """The model of ``config`` on PyTorch's meta device: every module and shape, no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def adapted_layers(model_dir: str | Path, target_modules: Iterable[str] | None = None) -> list[tuple[str, int, int]]:
    """``(name, d_in, d_out)`` of every linear layer an adapter on ``target_modules`` (default: the course's seven
    projections, :class:`~mmed_helpers.core.config.StageConfig`) attaches to, read from the model's config."""
    import torch
    from transformers import AutoConfig

    targets = set(target_modules or StageConfig().target_modules)
    model = _meta_model(AutoConfig.from_pretrained(str(model_dir)))
    return [
        (name, m.in_features, m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
    ]


def adapter_parameters(layers: Sequence[tuple[str, int, int]], r: int, dora: bool) -> int:
    """Trainable parameters of a LoRA (``dora=False``) or DoRA adapter of rank ``r`` on ``layers``
    (:func:`adapted_layers`): ``r * (d_in + d_out)`` per layer (A and B), plus ``d_out`` magnitudes for DoRA."""
    return sum(r * (d_in + d_out) + (d_out if dora else 0) for _, d_in, d_out in layers)


def _without_gqa(layers: Sequence[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """``layers`` as if k_proj and v_proj were as wide as q_proj (a common slip: forgetting grouped-query
    attention)."""
    q_out = {name.rsplit(".", 1)[0]: d_out for name, _, d_out in layers if name.endswith("q_proj")}
    return [
        (name, d_in, q_out.get(name.rsplit(".", 1)[0], d_out) if name.endswith(("k_proj", "v_proj")) else d_out)
        for name, d_in, d_out in layers
    ]


def check_dora_parameters(answer: int | None, model_dir: str | Path, r: int = 32) -> Verdict:
    """Notebook 00, exercise 3: the number of parameters a DoRA adapter of rank ``r`` on all attention and MLP
    projections adds to the model in ``model_dir`` (``base.path`` in the notebook)."""
    if answer is None:
        return _no_answer("your count (an integer)")
    layers = adapted_layers(model_dir)
    want = adapter_parameters(layers, r, dora=True)
    got = _number(answer)
    if got == want:
        return _right(f"{len(layers)} adapted weights, each with its A, B and magnitude vector.")
    if got == adapter_parameters(layers, r, dora=False):
        return _wrong("that is the LoRA part (A and B); DoRA also learns one magnitude per output channel.")
    full = _without_gqa(layers)
    if full != layers and got in (adapter_parameters(full, r, True), adapter_parameters(full, r, False)):
        return _wrong(
            "k_proj and v_proj are narrower than q_proj here: with grouped-query attention they have "
            "num_key_value_heads × head_dim outputs."
        )
    return _wrong(
        "take one layer's seven projections (q, k, v, o, gate, up, down), read d_in and d_out of each "
        "from hidden_size, intermediate_size and the heads, add r·(d_in + d_out) + d_out for each, and "
        "multiply by the number of layers."
    )


def check_dora_extra_parameters(answer: int | None, model_dir: str | Path) -> Verdict:
    """Notebook 03, exercise 1: how many more trainable parameters DoRA has than LoRA (same r, same layers) on
    the model in ``model_dir`` (``base.path`` in the notebook)."""
    if answer is None:
        return _no_answer("the difference in trainable parameters (an integer)")
    layers = adapted_layers(model_dir)
    want = adapter_parameters(layers, 1, dora=True) - adapter_parameters(layers, 1, dora=False)
    got = _number(answer)
    if got == want:
        return _right("One magnitude per output channel of every adapted weight, independent of r.")
    if got and got % want == 0:
        return _wrong("the difference does not depend on r: it is one vector per adapted weight.")
    return _wrong(
        "compare `trainable_parameters` of the two runs (or their adapters' safetensors): the extra "
        "tensors are the `lora_magnitude_vector`s, one number per output channel of each adapted weight."
    )


# --------------------------------------------------------------------------- the seed items' answer lengths


def long_answer_seeds(ratio: float = 2.0, languages: Iterable[str] | None = None) -> list[str]:
    """Ids of the single-answer seed MC items whose correct option is more than ``ratio`` times as long (in
    characters) as every distractor."""
    from .steps.generate import load_seeds

    caught = []
    for item in load_seeds("mc", languages or LANGUAGES):
        if "," in item.answer:  # several correct options: the rule is about one answer
            continue
        right = item.options[LETTERS.index(item.answer)]
        others = [o for i, o in enumerate(item.options) if LETTERS[i] != item.answer]
        if len(right) > ratio * max(len(o) for o in others):
            caught.append(item.id)
    return caught


def check_long_answer_seeds(answer: int | None, ratio: float = 2.0) -> Verdict:
    """Notebook 01, exercise 3: how many single-answer seed MC items (all six languages) have a correct option
    more than ``ratio`` times as long, in characters, as every distractor (``ratio=1``: simply the longest)."""
    if answer is None:
        return _no_answer("your count (an integer)")
    want = len(long_answer_seeds(ratio))
    got = _number(answer)
    if got == want:
        return _right()
    return _wrong(
        f"load the seeds with `load_seeds('mc', cfg.languages)`, skip the multi-answer ones (answer "
        f"like 'A,C'), and count the items whose correct option has more than {ratio:g} × the characters "
        "of the longest distractor (`len` of each option)."
    )


# --------------------------------------------------------------------------- notebook 02: the CCTS calibration


def check_mean_score_kept(
    answer: float | None, calibration=None, lang: str = "en", threshold: float | None = None, profile: str = "smoke"
) -> Verdict:
    """Notebook 02, exercise 1: how many of the faithful ``lang`` round trips of the calibration set the
    equal-weight mean of BLEU and BERTScore keeps at the threshold, as a count or as a share (0-1) of them.
    Pass the notebook's ``calibration`` to score with its encoder at once; without it the shipped pairs are
    scored with ``profile``'s encoder (a few seconds)."""
    if answer is None:
        return _no_answer("the count (or the share) of faithful round trips kept")
    cfg = load_profile(profile).ccts
    threshold = cfg.threshold if threshold is None else threshold
    if calibration is None:
        from .steps.ccts import CCTSScorer, load_calibration, score_calibration

        scorer = CCTSScorer(cfg.bertscore_model, cfg.bertscore_num_layers, form="mean")
        calibration = score_calibration(scorer, [p for p in load_calibration([lang]) if p.faithful])
    mean = calibration.ccts("mean")
    faithful = [
        m for p, m in zip(calibration.pairs, mean, strict=True) if p.lang == lang and p.faithful and not p.derived
    ]
    kept = sum(m >= threshold for m in faithful)
    share, tolerance = kept / len(faithful), 0.5 / len(faithful)  # a share read from the table, to 3 decimals
    got = _number(answer)
    if got is not None and (got == kept or abs(got - share) < tolerance or abs(got / 100 - share) < tolerance):
        return _right(f"Out of {len(faithful)} faithful round trips: the mean throws away nearly every paraphrase.")
    return _wrong(
        f"read the row `mean (before)` of the first calibration table (language {lang!r}): its "
        "`faithful_kept` is a share of `n_faithful`."
    )


# --------------------------------------------------------------------------- notebook 04: weights in memory

LLAMA_3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)
"""The shape of the ``full`` profile's base model (``config.json`` of Meta-Llama-3-8B-Instruct)."""

NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)
"""Bits per NF4 weight with double quantisation: 4 bits, an 8-bit scale per block of 64 weights, and a 32-bit
scale per 256 blocks: about 4.13."""


def weight_bytes(shape: dict | None = None) -> dict[str, float]:
    """Bytes of a Llama-shaped model's weights (default :data:`LLAMA_3_8B`): ``bf16`` (every weight in 16 bits)
    and ``nf4`` (as bitsandbytes loads it in 4-bit: the linear layers of the blocks in NF4 with double
    quantisation; the embedding, the output layer and the norms stay in 16 bits)."""
    import torch
    from transformers import LlamaConfig

    model = _meta_model(LlamaConfig(**(shape or LLAMA_3_8B)))
    head = model.get_output_embeddings()
    total = sum(p.numel() for p in model.parameters())
    quantised = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    return {"parameters": total, "bf16": 2.0 * total, "nf4": quantised * NF4_BITS / 8 + 2.0 * (total - quantised)}


def _close(got: float, want_bytes: float, tolerance: float) -> bool:
    """``got`` is ``want_bytes`` in GB (10^9) or in GiB (2^30), within ``tolerance`` (relative)."""
    return any(abs(got - want_bytes / unit) <= tolerance * want_bytes / unit for unit in (1e9, 2**30))


def check_frozen_weight_memory(bf16_gb: float | None, nf4_gb: float | None, shape: dict | None = None) -> Verdict:
    """Notebook 04, exercise 1: the frozen weights of the ``full`` profile's 8B model in bf16 and in NF4 with
    double quantisation, in GB (or GiB; within 5 %)."""
    if bf16_gb is None or nf4_gb is None:
        return _no_answer("your two figures in GB (bf16 first, then NF4)")
    want = weight_bytes(shape)
    bf16, nf4 = _number(bf16_gb), _number(nf4_gb)
    if bf16 is None or not _close(bf16, want["bf16"], 0.05):
        return _wrong(
            "bf16 is 2 bytes per parameter: count the parameters (embedding, the blocks' attention and "
            "MLP, output layer) first."
        )
    if nf4 is not None and _close(nf4, want["parameters"] * NF4_BITS / 8, 0.05):
        return _wrong(
            "bf16 is right; for NF4, bitsandbytes quantises only the linear layers inside the blocks: "
            "the embedding and the output layer (about 1 billion parameters here) stay in 16 bits."
        )
    if nf4 is None or not _close(nf4, want["nf4"], 0.05):
        return _wrong(
            "bf16 is right; for NF4 count ~4.13 bits for each weight of the blocks' linear layers and "
            "2 bytes for the embedding, the output layer and the norms."
        )
    return _right("The weights are the floor; the README's peaks add the adapter's training state and activations.")


# --------------------------------------------------------------------------- notebook 05: paired comparisons


def check_mcnemar_items(answer: int | None, only_b: int = 0, alpha: float = 0.05) -> Verdict:
    """Notebook 05, exercise 2: the fewest items stage 2 must get right and the base wrong (with ``only_b``
    items the other way round) for the exact McNemar test to give p < ``alpha``."""
    from .steps.evaluate import mcnemar_exact

    if answer is None:
        return _no_answer("the smallest number of items (an integer)")
    got = _number(answer)
    if got is None or got != int(got) or got < 0:
        return _wrong("the answer is a whole number of items.")
    k = int(got)
    if k <= only_b:
        return _wrong(f"stage 2 has to be right more often than the base: more than {only_b} items.")
    p = mcnemar_exact(k, only_b)
    if p >= alpha:
        return _wrong(f"at {k} the exact McNemar p-value is {p:.3g}, not below {alpha:g}: keep growing k.")
    if k - 1 > only_b and mcnemar_exact(k - 1, only_b) < alpha:
        return _wrong(f"{k} reaches p < {alpha:g}, but so does a smaller number: find the smallest.")
    return _right(f"p = {p:.3g}; one item fewer gives {mcnemar_exact(k - 1, only_b):.3g}.")


# --------------------------------------------------------------------------- notebook 06: the rank study


def check_rank_parameters(answer: int | None, model_dir: str | Path, r: int = 64, reference_r: int = 32) -> Verdict:
    """Notebook 06, exercise 1: how many more trainable parameters a stage-1 DoRA adapter of rank ``r`` has than
    one of rank ``reference_r`` on the model in ``model_dir`` (``base.path`` in the notebook)."""
    if answer is None:
        return _no_answer("the difference in trainable parameters (an integer)")
    layers = adapted_layers(model_dir)
    want = adapter_parameters(layers, r, dora=True) - adapter_parameters(layers, reference_r, dora=True)
    got = _number(answer)
    if got == want:
        return _right(
            f"(r - {reference_r}) x (d_in + d_out) for each of the {len(layers)} adapted weights; the magnitude "
            "vectors do not grow with r."
        )
    if got == adapter_parameters(layers, r, dora=True):
        return _wrong(f"that is the whole rank-{r} adapter: subtract the rank-{reference_r} one.")
    if got == want + adapter_parameters(layers, 1, True) - adapter_parameters(layers, 1, False):
        return _wrong("the magnitude vectors are the same at every rank: they cancel in the difference.")
    return _wrong(
        "A is r x d_in and B is d_out x r for every adapted weight, so the count grows by d_in + d_out per "
        "extra rank; compare `trainable parameters` of the two variants in the results table."
    )
