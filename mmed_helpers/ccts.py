"""``mmed_helpers.ccts``: the public name of the CCTS module, relied on from outside the course.

The code lives in :mod:`mmed_helpers.steps.ccts` (step 02's scorer); this thin alias keeps the documented import
path ``from mmed_helpers.ccts import keep_mask`` stable across the package's reorganisation. It re-exports and
adds nothing.
"""

from .steps.ccts import (  # noqa: F401
    BLEU_TOKENIZERS,
    PACKAGED_MINILM,
    REASONS,
    CalibrationPair,
    CalibrationResult,
    CCTSScore,
    CCTSScorer,
    MeaningGuard,
    bleu_tokenizer,
    decide,
    derived_controls,
    fit_calibration,
    keep_mask,
    kept_fraction,
    load_calibration,
    meaning_guard,
    resolve_encoder,
    roc_auc,
    roc_curve,
    scorer_for,
    sentence_bleu,
)

__all__ = [name for name in dir() if not name.startswith("_")]
