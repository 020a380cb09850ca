"""CCTS with exact expectations: its parts equal sacrebleu's and bert-score's own numbers."""

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
    return CCTSScorer(num_layers=6, batch_size=4)


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
    bleu_only = CCTSScorer(bleu_weight=1.0, bertscore_weight=0.0)
    bert_only = CCTSScorer(bleu_weight=0.0, bertscore_weight=2.0)
    lang, src, back = PAIRS[0]
    (b,) = bleu_only.score([src], [back], lang)
    (f,) = bert_only.score([src], [back], lang)
    assert b.ccts == pytest.approx(b.bleu) and f.ccts == pytest.approx(f.bertscore)
    skewed = CCTSScorer(bleu_weight=1.0, bertscore_weight=3.0).score([src], [back], lang)[0]
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
