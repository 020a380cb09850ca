"""The course's six languages and every fact the course keys by language, in one table.

Add a language here (and its bundled corpus, prompts and seeds under ``mmed_helpers/data``) and every step picks
it up: the MC prompt and answer labels, the translation prompt's language name, the seq2seq MT codes, the BLEU
tokeniser, the MMedBench file name and the words answer extraction looks for::

    >>> from mmed_helpers.core.languages import LANGUAGES, language
    >>> LANGUAGES
    ('en', 'zh', 'ja', 'fr', 'ru', 'es')
    >>> language("ja").nllb, language("ja").bleu_tokenizer, language("ja").mmedbench_file
    ('jpn_Jpan', 'ja-mecab', 'Japanese')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One course language."""

    code: str
    """ISO 639-1 code, the key used everywhere (profiles, records, file names)."""
    name: str
    """English name; how a translation prompt names the language."""
    mmedbench_file: str
    """Stem of the language's file in MMedBench (``Train/<stem>.jsonl``, ``Test/<stem>.jsonl``)."""
    nllb: str
    """NLLB-200 language code."""
    m2m: str
    """M2M-100 language code as ``M2M100Tokenizer`` takes it (``src_lang="en"``); the vocabulary token is
    :attr:`m2m_token` (``__en__``)."""
    bleu_tokenizer: str
    """sacrebleu tokeniser for text in this language (``ja-mecab`` segments words; Chinese by character)."""
    ask: str
    """The MC instruction for a single-answer item."""
    ask_multi: str
    """The MC instruction for an item with several correct answers."""
    answer_label: str
    """Label of the answer line in an MC target (``Answer: B. ...``)."""
    rationale_label: str
    """The word that labels a rationale, in the tiny model's pre-training format lines (``core.tiny``); stage 2's
    targets write the rationale without it (``mcformat.mc_target`` says why)."""
    answer_words: tuple[str, ...]
    """Regular expressions (case-insensitive) for the words that introduce the answer letter in a reply
    ("the answer is", "答案是", "正解は", "la bonne réponse est") - answer extraction."""
    correct_words: tuple[str, ...]
    """Regular expressions for the words that follow a letter to say it is right ("B is correct", "Bが正解")."""
    and_words: tuple[str, ...]
    """The word for "and" between answer letters (``A et C``)."""

    @property
    def m2m_token(self) -> str:
        """The M2M-100 vocabulary token of the language (``__en__``), what ``get_lang_id`` looks up."""
        return f"__{self.m2m}__"


_TABLE = (
    Language(
        code="en",
        name="English",
        mmedbench_file="English",
        nllb="eng_Latn",
        m2m="en",
        bleu_tokenizer="13a",
        ask="Choose the single best answer.",
        ask_multi="Choose all correct answers.",
        answer_label="Answer",
        rationale_label="Rationale",
        answer_words=(
            r"(?:final\s+|correct\s+|right\s+|best\s+)?answers?(?:\s+(?:is|are|would\s+be|should\s+be))?",
            r"(?:correct|right|best)\s+(?:option|choice)s?(?:\s+(?:is|are))?",
        ),
        correct_words=(r"(?:is|are)\s+(?:the\s+)?(?:correct|right|true)",),
        and_words=("and",),
    ),
    Language(
        code="zh",
        name="Simplified Chinese",
        mmedbench_file="Chinese",
        nllb="zho_Hans",
        m2m="zh",
        bleu_tokenizer="zh",
        ask="请选择唯一的最佳答案。",
        ask_multi="请选出所有正确答案。",
        answer_label="答案",
        rationale_label="解析",
        answer_words=(
            r"(?:正确|最佳|最终)?答案(?:是|为|应为|应该是)?",
            r"(?:正确|最佳)选项(?:是|为)?",
            r"[故应]选",
            r"解答",
        ),
        correct_words=(r"(?:是)?(?:正确答案|正确的|正确)",),
        and_words=("和", "及"),
    ),
    Language(
        code="ja",
        name="Japanese",
        mmedbench_file="Japanese",
        nllb="jpn_Jpan",
        m2m="ja",
        bleu_tokenizer="ja-mecab",
        ask="最も適切な選択肢を一つ選べ。",
        ask_multi="正しいものをすべて選べ。",
        answer_label="答え",
        rationale_label="解説",
        answer_words=(r"答え(?:は)?", r"正解(?:は)?", r"解答(?:は)?", r"正しいのは"),
        correct_words=(r"(?:が|は)\s*(?:正解|正しい)",),
        and_words=("と",),
    ),
    Language(
        code="fr",
        name="French",
        mmedbench_file="French",
        nllb="fra_Latn",
        m2m="fr",
        bleu_tokenizer="intl",
        ask="Choisissez la meilleure réponse.",
        ask_multi="Choisissez toutes les réponses exactes.",
        answer_label="Réponse",
        rationale_label="Justification",
        answer_words=(
            r"(?:la\s+|les\s+)?(?:bonnes?\s+|meilleures?\s+)?réponses?(?:\s+(?:correctes?|exactes?|justes?))?"
            r"(?:\s+(?:est|sont|serait))?",
        ),
        correct_words=(r"(?:est|sont)\s+(?:la\s+|les\s+)?(?:bonnes?\s+réponses?|correctes?|exactes?|justes?)",),
        and_words=("et",),
    ),
    Language(
        code="ru",
        name="Russian",
        mmedbench_file="Russian",
        nllb="rus_Cyrl",
        m2m="ru",
        bleu_tokenizer="intl",
        ask="Выберите один правильный ответ.",
        ask_multi="Выберите все правильные ответы.",
        answer_label="Ответ",
        rationale_label="Обоснование",
        answer_words=(r"(?:правильный\s+|верный\s+)?ответ(?:ы|ом)?(?:\s*(?:—|-|это))?",),
        correct_words=(r"(?:является\s+)?(?:правильным|верным|правильный|верный)",),
        and_words=("и",),
    ),
    Language(
        code="es",
        name="Spanish",
        mmedbench_file="Spanish",
        nllb="spa_Latn",
        m2m="es",
        bleu_tokenizer="intl",
        ask="Elija la única respuesta correcta.",
        ask_multi="Elija todas las respuestas correctas.",
        answer_label="Respuesta",
        rationale_label="Justificación",
        answer_words=(
            r"(?:la\s+|las\s+)?respuestas?(?:\s+(?:correctas?|exactas?))?(?:\s+(?:es|son|sería))?",
            r"(?:la\s+)?opci[oó]n\s+correcta(?:\s+es)?",
        ),
        correct_words=(r"(?:es|son)\s+(?:la\s+|las\s+)?(?:correctas?|respuestas?\s+correctas?)",),
        and_words=("y",),
    ),
)
TABLE: dict[str, Language] = {lang.code: lang for lang in _TABLE}
LANGUAGES: tuple[str, ...] = tuple(TABLE)
"""The course languages in course order (English first)."""
DEFAULT = "en"
"""The language whose labels stand in for a code the table does not know."""


def language(code: str) -> Language:
    """The row of ``code``; a ``KeyError`` naming the known codes for anything else."""
    try:
        return TABLE[code]
    except KeyError:
        raise KeyError(f"unknown language {code!r}; the course languages are {list(LANGUAGES)}") from None


def language_or_default(code: str) -> Language:
    """The row of ``code``, or English's for a code outside the table (labels of an unknown language)."""
    return TABLE.get(code, TABLE[DEFAULT])
