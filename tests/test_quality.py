import pytest

from mmed_helpers.core.quality import (
    MinHasher,
    content_tokens,
    detect_language,
    find_duplicates,
    is_language,
    jaccard,
    normalize,
    support_score,
    text_length,
)


@pytest.mark.parametrize(
    "text, lang",
    [
        ("What are the main causes of iron deficiency anemia in adults?", "en"),
        ("缺铁性贫血最常见的原因是什么？", "zh"),
        ("鉄欠乏性貧血の最も多い原因は何ですか。", "ja"),
        ("Quelle est la cause la plus fréquente de l'anémie ferriprive ?", "fr"),
        ("Какова основная причина железодефицитной анемии?", "ru"),
        ("¿Cuál es la causa más frecuente de anemia ferropénica?", "es"),
    ],
)
def test_language_identification(text, lang):
    assert detect_language(text)[0] == lang
    assert is_language(text, lang)
    assert not is_language(text, "en" if lang != "en" else "fr")


def test_chinese_and_japanese_are_told_apart_by_kana():
    assert is_language("高血圧の治療", "ja") and not is_language("高血圧の治療", "zh")
    assert is_language("慢性乙型肝炎", "zh") and not is_language("慢性乙型肝炎", "ja")
    assert not is_language("   ", "en")


def test_wrong_language_is_caught():
    assert detect_language("Der Patient hat seit drei Tagen Fieber und Husten.")[0] == "de"
    assert not is_language("Der Patient hat seit drei Tagen Fieber und Husten.", "en")


def test_text_length_counts_cjk_twice():
    assert text_length("abc") == 3
    assert text_length("高血圧") == 6
    assert text_length("a高") == 3


def test_content_tokens_and_support():
    # numbers, words with digits and two-capital abbreviations count as they are; "an", "in", "Он" do not
    assert content_tokens("The ECG of an MI, in 2 leads") == {"the", "ecg", "leads", "mi", "2"}
    assert content_tokens("Give 0,5 mg of B12 IV") == {"give", "0.5", "b12", "iv"}
    assert content_tokens("Он пил. ВИЧ") == {"пил", "вич"}
    assert content_tokens("сладкий сладкого") == {"сладк"} and content_tokens("caused causes") == {"cause"}
    assert content_tokens("乙型肝炎") == {"乙型", "型肝", "肝炎"}
    source = "In adults, iron deficiency usually results from chronic blood loss."
    assert support_score("Iron deficiency results from chronic blood loss.", source) == 1.0
    assert support_score("Vitamin C causes scurvy.", source) == 0.0
    assert support_score("Iron overload causes hemochromatosis.", source) == pytest.approx(1 / 4)
    # a short answer is checked on what it has, and one with nothing to check does not pass
    assert support_score("", source) == 0.0 and support_score("—", source) == 0.0
    dose = "Give 5 mg of enalapril; in DKA start insulin."
    assert support_score("5 mg", dose) == 1.0 and support_score("10 mg", dose) == 0.0
    assert support_score("DKA", dose) == 1.0 and support_score("HHS", dose) == 0.0


def test_normalize_ignores_case_spacing_punctuation():
    assert normalize("What  causes Anemia?") == normalize("what causes anemia") == "whatcausesanemia"


def test_find_duplicates_exact_near_and_distinct():
    texts = [
        "What causes iron deficiency anemia in adults?",
        "How is asthma treated in children?",
        "What causes iron-deficiency anaemia in adults?",
        "what causes iron deficiency anemia in adults",
        "慢性乙型肝炎是由乙型肝炎病毒持续感染引起的",
        "慢性乙型肝炎是由乙型肝炎病毒持续感染引起的疾病",
        "Which drug class is first line for hypertension in diabetes?",
    ]
    assert find_duplicates(texts) == {2: ("near", 0), 3: ("exact", 0), 5: ("near", 4)}
    assert find_duplicates(texts, threshold=0.99) == {3: ("exact", 0)}


def test_minhash_estimates_jaccard():
    hasher = MinHasher(num_perm=256)
    pairs = [
        (
            "Chronic kidney disease is defined by reduced filtration.",
            "Chronic kidney disease is defined by albuminuria.",
        ),
        ("Atrial fibrillation raises stroke risk.", "Atrial fibrillation raises the risk of stroke."),
    ]
    for a, b in pairs:
        est = float((hasher.signature(a) == hasher.signature(b)).mean())
        assert abs(est - jaccard(a, b)) < 0.12
    assert (MinHasher().signature("same text") == MinHasher().signature("same text")).all()
