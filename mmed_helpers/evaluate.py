"""``mmed_helpers.evaluate``: the evaluation API under the name it had before the package was layered.

Kept because scripts outside the course import it (``from mmed_helpers.evaluate import load_benchmark``). The
code lives in :mod:`mmed_helpers.steps.benchmarks` (loaders) and :mod:`mmed_helpers.steps.evaluate` (scoring);
this module only re-exports them.
"""

from .steps.benchmarks import EvalError, EvalItem, LoadResult, load_benchmark, select_items
from .steps.evaluate import (
    ItemResult,
    compare_models,
    evaluate_model,
    extract_answers,
    loglik_scores,
    mcnemar_exact,
    model_sources,
    summarize,
    summarize_overall,
    wilson_interval,
)

__all__ = [
    "EvalError",
    "EvalItem",
    "ItemResult",
    "LoadResult",
    "compare_models",
    "evaluate_model",
    "extract_answers",
    "load_benchmark",
    "loglik_scores",
    "mcnemar_exact",
    "model_sources",
    "select_items",
    "summarize",
    "summarize_overall",
    "wilson_interval",
]
