"""CCTS with exact expectations: its parts equal sacrebleu's and bert-score's own numbers; the calibrated form, the
meaning guard and the keep decision, measured on the shipped labelled round trips."""

import dataclasses

import bert_score
import pytest
import sacrebleu

from mmed_helpers.steps.ccts import CCTSScorer, bleu_tokenizer, kept_fraction, resolve_encoder, sentence_bleu

PAIRS = [
    (
        "en",
        "Aspirin irreversibly inhibits platelet cyclooxygenase.",
        "Aspirin permanently blocks platelet cyclooxygenase.",
    ),
    (
        "fr",
        "L'aspirine inhibe de façon irréversible la cyclo-oxygénase plaquettaire.",
        "L'aspirine bloque la cyclo-oxygénase des plaquettes.",
    ),
    (
        "ru",
        "Аспирин необратимо ингибирует циклооксигеназу тромбоцитов.",
        "Аспирин блокирует циклооксигеназу тромбоцитов.",
    ),
    ("zh", "阿司匹林不可逆地抑制血小板环氧合酶。", "阿司匹林抑制血小板的环氧合酶。"),
    (
        "ja",
        "アスピリンは血小板のシクロオキシゲナーゼを不可逆的に阻害する。",
        "アスピリンは血小板のシクロオキシゲナーゼを阻害する。",
    ),
]


@pytest.fixture(scope="module")
def scorer():
    return CCTSScorer(num_layers=6, batch_size=4, form="mean")


@pytest.mark.parametrize("lang, source, _", PAIRS)
def test_identical_texts_score_one(scorer, lang, source, _):
    (s,) = scorer.score([source], [source], lang)
    assert s.bleu == pytest.approx(1.0, abs=1e-12)
    assert s.bertscore == pytest.approx(1.0, abs=1e-6)
    assert s.ccts == pytest.approx(1.0, abs=1e-6)


def test_parts_equal_the_reference_implementations(scorer):
    langs = [p[0] for p in PAIRS]
    sources = [p[1] for p in PAIRS]
    backs = [p[2] for p in PAIRS]
    scores = scorer.score(sources, backs, langs)
    _, _, f1 = bert_score.score(backs, sources, model_type=resolve_encoder("packaged-minilm"), num_layers=6)
    for (lang, src, back), s, ref_f1 in zip(PAIRS, scores, f1.tolist(), strict=True):
        expected_bleu = sacrebleu.sentence_bleu(back, [src], tokenize=bleu_tokenizer(lang)).score / 100
        assert s.bleu == pytest.approx(expected_bleu, abs=1e-12)
        assert s.bertscore == pytest.approx(ref_f1, abs=1e-5)
        assert s.ccts == pytest.approx(0.5 * expected_bleu + 0.5 * ref_f1, abs=1e-5)
        assert 0.0 < s.ccts < 1.0


def test_chinese_and_japanese_use_their_tokenizers():
    assert (bleu_tokenizer("zh"), bleu_tokenizer("ja"), bleu_tokenizer("en"), bleu_tokenizer("ru")) == (
        "zh",
        "ja-mecab",
        "13a",
        "intl",
    )
    _, src, back = PAIRS[4]
    ja = sentence_bleu(back, src, "ja")
    assert ja == pytest.approx(sacrebleu.sentence_bleu(back, [src], tokenize="ja-mecab").score / 100)
    # without segmentation the sentence is one "word" and the near match scores as a miss
    assert sacrebleu.sentence_bleu(back, [src], tokenize="13a").score / 100 < ja / 2
    _, src, back = PAIRS[3]
    assert sentence_bleu(back, src, "zh") == pytest.approx(
        sacrebleu.sentence_bleu(back, [src], tokenize="zh").score / 100
    )


def test_weights(scorer):
    bleu_only = CCTSScorer(bleu_weight=1.0, bertscore_weight=0.0, form="mean")
    bert_only = CCTSScorer(bleu_weight=0.0, bertscore_weight=2.0, form="mean")
    lang, src, back = PAIRS[0]
    (b,) = bleu_only.score([src], [back], lang)
    (f,) = bert_only.score([src], [back], lang)
    assert b.ccts == pytest.approx(b.bleu) and f.ccts == pytest.approx(f.bertscore)
    skewed = CCTSScorer(bleu_weight=1.0, bertscore_weight=3.0, form="mean").score([src], [back], lang)[0]
    assert skewed.ccts == pytest.approx((b.bleu + 3 * f.bertscore) / 4, abs=1e-6)
    with pytest.raises(ValueError, match="weights must be >= 0 and not both 0"):
        CCTSScorer(bleu_weight=0.0, bertscore_weight=0.0)
    with pytest.raises(ValueError, match="weights"):
        CCTSScorer(bleu_weight=-1.0)


def test_empty_and_mismatched_inputs_are_clear_errors(scorer):
    with pytest.raises(ValueError, match="empty candidate text at index 1"):
        scorer.score(["a text", "another"], ["a text", "  "], "en")
    with pytest.raises(ValueError, match="empty reference text at index 0"):
        scorer.score([""], ["a text"], "en")
    with pytest.raises(ValueError, match="lists differ in length: 1 candidates vs 2 references"):
        scorer.score(["a", "b"], ["a"], "en")
    with pytest.raises(ValueError, match="got 1 languages for 2 pairs"):
        scorer.score(["a", "b"], ["a", "b"], ["en"])
    assert scorer.score([], [], "en") == []


def test_kept_fraction():
    assert kept_fraction([0.1, 0.5, 0.8, 0.9], [0.0, 0.5, 0.8, 0.95]) == [1.0, 0.75, 0.5, 0.0]
    assert kept_fraction([], [0.5]) == [0.0]


# --------------------------------------------------------------------------- calibrated CCTS, guard, keep decision

import math  # noqa: E402

from mmed_helpers.core.config import load_profile  # noqa: E402
from mmed_helpers.core.languages import LANGUAGES  # noqa: E402
from mmed_helpers.steps.ccts import (  # noqa: E402
    MeaningGuard,
    derived_controls,
    fit_calibration,
    fit_logistic,
    load_calibration,
    meaning_guard,
    roc_auc,
    roc_curve,
)


@pytest.fixture(scope="module")
def calibration():
    """The shipped pairs scored once with the smoke encoder, and the fit on them."""
    return fit_calibration(CCTSScorer(batch_size=64))


def test_calibration_set_is_labelled_and_balanced():
    pairs = load_calibration()
    by_lang = {lang: [p for p in pairs if p.lang == lang] for lang in ("en", "zh", "ja", "fr", "ru", "es")}
    assert len(by_lang["en"]) >= 200 and all(len(v) >= 20 for v in by_lang.values())
    for lang, ps in by_lang.items():
        assert sum(p.faithful for p in ps) * 2 == len(ps), lang  # half faithful
        assert all((p.defect == "none") == p.faithful for p in ps)
        assert all(p.back_translation != p.source for p in ps)
    assert len({p.id for p in pairs}) == len(pairs)
    assert len({p.specialty for p in by_lang["en"]}) >= 10
    kinds = {p.defect for p in by_lang["en"] if not p.faithful}
    assert {"negation", "direction", "drug", "dose", "unit", "number", "laterality", "population"} <= kinds
    assert {"dropped_clause", "addition"} <= kinds


def test_a_bad_calibration_line_names_its_place(tmp_path):
    (tmp_path / "en.jsonl").write_text('{"id": "x", "source": "a", "back_translation": "b", "faithful": "yes"}\n')
    with pytest.raises(ValueError, match=r"en.jsonl:1: a calibration pair needs"):
        load_calibration(["en"], tmp_path)
    with pytest.raises(FileNotFoundError, match="no CCTS calibration pairs for language 'de'"):
        load_calibration(["de"], tmp_path)


def test_derived_controls_are_gross_failures():
    pairs = load_calibration(["en"])
    controls = derived_controls(pairs)
    assert {c.defect for c in controls} == {"unrelated", "truncated"}
    assert all(not c.faithful and c.derived for c in controls)
    src = {p.source: p.back_translation for p in pairs if p.faithful}
    for c in controls:
        if c.defect == "truncated":
            assert len(c.back_translation) < len(src[c.source])


@pytest.mark.parametrize(
    "source, back, check",
    [
        ("Give 80 mg once daily.", "Give 8 mg once daily.", "number"),
        ("Give two tablets.", "Give 2 tablets.", None),  # number words read as numbers
        ("Treat within 4.5 hours.", "Treat within 4.5 days.", "unit"),
        ("Dose 15 mg per kilogram.", "Dose 15 mg per kg.", None),
        ("Nitrates are contraindicated.", "Nitrates are recommended.", "negation"),
        ("Antibiotics are not effective.", "Antibiotics do not work.", None),
        ("Beta blockers reduce mortality.", "Beta blockers increase mortality.", "opposite"),
        ("Beta blockers reduce mortality.", "Beta blockers lower mortality.", None),
        ("Pain in the left flank.", "Pain in the right flank.", "opposite"),
        ("Treat overdose with acetylcysteine.", "Treat overdose with naloxone.", "term"),
        ("Paracetamol is safe.", "Acetaminophen is safe.", None),  # synonyms of one term
        ("Take it once daily.", "Take it once a day.", None),  # "daily" is a day
        ("Take it once daily.", "Take it once a week.", "unit"),
        ("Give antibiotics without delay.", "Give antibiotics immediately.", None),  # an idiom, not a negation
        ("Take it without food.", "Take it with food.", "negation"),
    ],
)
def test_meaning_guard_checks(source, back, check):
    finding = meaning_guard("en").check(source, back)
    assert (finding.check if finding else None) == check, finding


def test_meaning_guard_in_other_languages_and_without_a_lexicon():
    assert meaning_guard("zh").check("左侧病变导致右侧无力。", "左侧病变导致左侧无力。").check == "opposite"
    assert meaning_guard("ru").check("Антибиотики не действуют.", "Антибиотики действуют.").check == "negation"
    assert meaning_guard("fr").check("15 g de sucre", "15 mg de sucre").check == "unit"
    bare = MeaningGuard("de", lexicon={})
    assert bare.check("Nicht geben.", "Geben.") is None  # no lexicon: only numbers are checked
    assert bare.check("24 Stunden", "72 Stunden").check == "number"


def test_roc_auc_and_curve():
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.3, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    fpr, tpr, _ = roc_curve([0.9, 0.4, 0.6, 0.1], [True, True, False, False])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_fit_logistic_recovers_a_known_rule_and_keeps_weights_non_negative():
    xs = [(i / 20, j / 20) for i in range(21) for j in range(21)]
    ys = [2 * a + 6 * b > 4 for a, b in xs]  # depends on both, more on the second
    a, b, c = fit_logistic(xs, ys, l2=1e-4)
    assert (
        a > 0
        and b > 2 * a
        and all((a * x + b * y + c > 0) == t for (x, y), t in zip(xs, ys, strict=True) if abs(2 * x + 6 * y - 4) > 0.3)
    )
    a, b, _ = fit_logistic(xs, [x[0] < 0.5 for x in xs])  # a rule that falls with the first input
    assert a == 0.0 and b >= 0.0


def test_shipped_smoke_coefficients_are_the_fit(calibration):
    """The smoke profile's fixed coefficients are what fitting on the shipped pairs with its encoder gives."""
    cc = load_profile("smoke").ccts
    assert cc.score_form == "calibrated" and cc.calibration == "fixed"
    for got, shipped in zip(calibration.coefficients, (cc.bleu_coef, cc.bertscore_coef, cc.intercept), strict=True):
        assert got == pytest.approx(shipped, abs=2e-3)
    a, b, c = calibration.coefficients
    assert CCTSScorer().combine(1.0, 1.0) == pytest.approx(1 / (1 + math.exp(-(a + b + c))), abs=1e-4)


def test_smoke_keep_decision_meets_the_targets(calibration):
    """The done criterion of the issue on the smoke profile's source language: >= 90 % of faithful English
    round trips kept, >= 85 % of the unfaithful ones rejected; and gross failures rejected by the score alone."""
    m = {row["score"]: row for row in calibration.metrics(0.8, lang="en")}
    decision = m["CCTS + guard (keep decision)"]
    assert decision["faithful_kept"] >= 0.90 and decision["unfaithful_rejected"] >= 0.85
    # the guard adds what the score cannot see; the score alone does not separate one-word flips
    assert m["CCTS (calibrated)"]["unfaithful_rejected"] < 0.5 < m["meaning guard alone"]["unfaithful_rejected"]
    assert m["BLEU"]["roc_auc"] < 0.5  # BLEU rewards the near-copy with its meaning flipped
    derived = {row["score"]: row for row in calibration.metrics(0.8, derived=True, lang="en")}
    assert derived["CCTS (calibrated)"]["roc_auc"] > 0.95 and derived["CCTS (calibrated)"]["unfaithful_rejected"] > 0.95
    # the equal-weight mean of before keeps almost no faithful paraphrase at 0.8
    assert m["mean (before)"]["faithful_kept"] < 0.3


def test_keep_mask_is_the_whole_decision():
    from mmed_helpers.ccts import keep_mask

    cc = load_profile("smoke").ccts
    sources = [
        "Beta blockers reduce mortality after myocardial infarction.",
        "Beta blockers reduce mortality after myocardial infarction.",
        "Lithium levels should be checked 12 hours after the last dose.",
        "Lithium levels should be checked 12 hours after the last dose.",
    ]
    backs = [
        "Beta blockers decrease mortality following a myocardial infarction.",
        "Beta blockers increase mortality after myocardial infarction.",  # direction flipped
        "Lithium levels should be checked 2 hours after the last dose.",  # number changed
        "The weather was pleasant on the coast.",  # unrelated
    ]
    assert keep_mask(sources, backs, "en", cc) == [True, False, False, False]
    off = load_profile("smoke", {"ccts.meaning_guard": False}).ccts
    assert keep_mask(sources, backs, "en", off) == [True, True, True, False]  # the score alone misses the flips
    # at threshold 0 only the guard decides: the unrelated text lost the number 12
    zero = load_profile("smoke", {"ccts.threshold": 0.0}).ccts
    assert keep_mask(sources, backs, "en", zero) == [True, False, False, False]


def test_calibration_fit_mode_fits_for_the_profile_encoder(calibration):
    """``calibration: fit`` (colab, full) fits the coefficients when the scorer is built; the fixed ones are
    ignored then."""
    cc = load_profile("smoke", {"ccts.calibration": "fit", "ccts.bleu_coef": 0.0, "ccts.intercept": 0.0}).ccts
    scorer = CCTSScorer.from_config(cc)
    assert scorer.calibration is not None
    # batch composition moves F1 in the 7th decimal (padding), so the refit agrees to 1e-4, not bit for bit
    assert scorer.coefficients == pytest.approx(calibration.coefficients, abs=1e-4)
    with pytest.raises(ValueError, match="'ccts.calibration' in override of profile 'smoke' must be one of"):
        load_profile("smoke", {"ccts.calibration": "auto"})  # the profile refuses it before any step
    with pytest.raises(ValueError, match="ccts.calibration must be one of"):  # a config built in code
        CCTSScorer.from_config(dataclasses.replace(cc, calibration="auto"))
    with pytest.raises(ValueError, match="ccts.score_form must be one of"):
        CCTSScorer(form="median")


def test_calibration_plot(calibration, tmp_path):
    from mmed_helpers.plots import plot_ccts_calibration

    plot_ccts_calibration(calibration, 0.8, lang="en", save_to=tmp_path / "cal.png")
    assert (tmp_path / "cal.png").stat().st_size > 5000


def test_heldout_pairs_are_scored_with_the_fit_not_refitted(calibration):
    """The held-out set is a real, separate set (its own sources, every course language, both labels) and is
    scored with the fitted coefficients; it is never part of the fit."""
    from mmed_helpers.steps.ccts import CCTS_HELDOUT_DIR, heldout_check

    shipped = load_calibration()
    held = load_calibration(directory=CCTS_HELDOUT_DIR)
    assert {p.lang for p in held} == set(LANGUAGES)
    assert sum(p.lang == "en" for p in held) >= 50
    assert not {p.source for p in held} & {p.source for p in shipped}
    assert not {p.id for p in held} & {p.id for p in calibration.pairs}
    result = heldout_check(calibration)
    assert result.coefficients == calibration.coefficients
    assert [p.id for p in result.pairs] == [p.id for p in held]
    rows = {r["score"]: r for r in result.metrics(0.8)}
    assert rows["CCTS + guard (keep decision)"]["n_faithful"] == sum(p.faithful for p in held)
