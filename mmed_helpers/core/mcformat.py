"""How a multiple-choice item is asked and answered: one format for generation, training and evaluation.

Stage 2 trains on :func:`mc_prompt` -> :func:`mc_target`; notebook 05 asks the same :func:`mc_prompt` and reads
the reply with :func:`extract_answers`, which reads back every target :func:`mc_target` writes (single- and
multi-answer, all six languages; a test holds the two together)::

    >>> mc_prompt("Which vitamin ...?", ["B1", "B12"], "en")
    'Which vitamin ...?\\n\\nA. B1\\nB. B12\\n\\nChoose the single best answer.'
    >>> mc_target(["B"], ["B1", "B12"], "Cobalamin is ...", "en")
    'Answer: B. B12\\nCobalamin is ...'
    >>> extract_answers("Answer: B. B12", 2)
    ['B']

Lettered options as datasets ship them (``{"A": ..., "B": ...}`` or a list) become a list with
:func:`options_list`; answer keys such as MMedBench's ``"A,C"`` become letters with :func:`answer_letters`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from .languages import TABLE, language_or_default

LETTERS = "ABCDEFGHIJ"
"""Option letters, in order; an item has at most ten options."""
MULTI_SEPARATOR = ", "
"""Between the letters of a multi-answer target (``Answer: A, C. ...``)."""


class FormatError(ValueError):
    """Options or an answer key do not fit the lettered multiple-choice format (the message says how)."""


def letters_for(options: Sequence[Any]) -> str:
    """The letters of ``options``: ``"ABCD"`` for four."""
    if len(options) > len(LETTERS):
        raise FormatError(f"at most {len(LETTERS)} options, got {len(options)}")
    return LETTERS[: len(options)]


def option_lines(options: Sequence[str]) -> str:
    """``A. first\\nB. second ...``, as both our prompt and lm-evaluation-harness list options."""
    return "\n".join(f"{letter}. {text}" for letter, text in zip(letters_for(options), options, strict=True))


def ask(lang: str, multi: bool = False) -> str:
    """The instruction closing an MC prompt, in ``lang`` (English for an unknown code)."""
    row = language_or_default(lang)
    return row.ask_multi if multi else row.ask


def mc_prompt(question: str, options: Sequence[str], lang: str, *, multi: bool = False, context: str = "") -> str:
    """The user turn of an MC item: (context,) stem, lettered options, the instruction in the item's language."""
    head = f"{context}\n\n" if context else ""
    return f"{head}{question}\n\n{option_lines(options)}\n\n{ask(lang, multi)}"


def mc_target(answers: Sequence[str] | str, options: Sequence[str], rationale: str, lang: str) -> str:
    """The assistant turn stage 2 trains on: the answer letter(s) with their text, then the rationale on the next
    line, without a label of its own.

    One answer: ``Answer: B. B12``; several: ``Answer: A, C. first; third``. The rationale has no label because
    a label there competes with the answer label for the reply's first token: on the smoke model, stage 2 trained
    on ``Answer: ...`` + ``Rationale: ...`` often opened its reply with the rationale label (``解説:``,
    ``Justification:``) and gave no letter (8-74 % of replies readable over reruns); without it, 84-99 %."""
    chosen = [answers] if isinstance(answers, str) else list(answers)
    letters = letters_for(options)
    if not chosen or any(a not in letters for a in chosen):
        raise FormatError(f"answers {chosen} are not among the option letters {letters}")
    row = language_or_default(lang)
    texts = "; ".join(options[letters.index(a)] for a in chosen)
    return f"{row.answer_label}: {MULTI_SEPARATOR.join(chosen)}. {texts}\n{rationale}"


def options_list(value: Any) -> list[str]:
    """Options as a list in letter order, from a list of strings or a mapping lettered ``A, B, ...`` in order."""
    if isinstance(value, Mapping):
        keys = [str(k).strip().upper() for k in value]
        if keys != list(LETTERS[: len(keys)]):
            raise FormatError(f"options must be lettered A, B, C, ... in order, got {keys}")
        value = list(value.values())
    if not isinstance(value, list | tuple) or not all(isinstance(o, str) for o in value):
        raise FormatError("options must be a list of strings or a mapping of letters to strings")
    return [o.strip() for o in value]


def answer_letters(value: Any, n_options: int) -> list[str]:
    """The sorted gold letters of an answer key: ``"B"``, ``"A,C"``, ``"A C"``, ``"AC"`` or ``["A", "C"]``."""
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if not isinstance(value, str):
        raise FormatError(f"answer_idx must be letters (a string or a list of strings), got {value!r}")
    letters = [x for x in re.split(r"[,\s;]+", value.strip().upper()) if x]
    if len(letters) == 1 and len(letters[0]) > 1 and letters[0].isalpha():
        letters = list(letters[0])  # "AC"
    valid = LETTERS[:n_options]
    if not letters or any(x not in valid for x in letters) or len(set(letters)) != len(letters):
        raise FormatError(f"answer_idx {value!r} is not one or more of the option letters {valid}")
    return sorted(letters)


# --------------------------------------------------------------------------- reading replies

_HOMOGLYPHS = str.maketrans({"А": "A", "В": "B", "С": "C", "Е": "E"})
_EMPHASIS = re.compile(r"\*\*|__|[*`]")


def _alternation(words) -> str:
    return "|".join(dict.fromkeys(words))


_AND = _alternation([",", "、", "，", "/", "&", "\\+"] + [w for row in TABLE.values() for w in row.and_words])
_FILLER = r"(?i:(?:the\s+|l'|la\s+)?(?:option|choice|proposition|opci[oó]n|вариант|选项|選択肢)s?\s*)?"
# one letter, optionally in brackets; a list of letters joined by "and" words; or a run like "ACD"
_ONE = r"[(\[（]?\s*[A-Ja-j]\s*[)\]）]?"
_LIST = rf"(?P<list>{_ONE}(?:\s*(?:{_AND})\s*{_ONE})*|[A-J]{{2,10}}(?![A-Za-z]))"
_END = r"(?=$|[\s.,;:!?。、，；：)\]）]|です|である|だ)"
_LABELLED = re.compile(
    rf"(?i:{_alternation(w for row in TABLE.values() for w in row.answer_words)})\s*[:：=\-—]?\s*{_FILLER}{_LIST}{_END}"
)
_VERDICT = re.compile(
    rf"{_FILLER}(?P<list>{_ONE}(?:\s*(?:{_AND})\s*{_ONE})*)\s*"
    rf"(?i:{_alternation(w for row in TABLE.values() for w in row.correct_words)})"
)
_LEAD = r"[(\[]?(?:[A-J]|[a-j](?=\)))[)\]]?"  # a capital, or a small letter with its bracket: "d)"
_LEADING = re.compile(rf"\s*{_FILLER}(?P<list>{_LEAD}(?:\s*(?:{_AND})\s*{_LEAD})*)(?=$|[.)。．:：\-—,、]|\s*\n|\s+-)")


def _stands_alone(match: re.Match, text: str) -> bool:
    """A lower-case letter is an answer only in brackets or before punctuation or the end ("is (c)", "is c."),
    not when a word follows it ("is a deficiency")."""
    group = match.group("list")
    if re.search(r"[A-J]|[(\[（]", group):
        return True
    return re.match(r"\s*(?:$|[.,;:!?)])", text[match.end("list") :]) is not None


def _letters_in(group: str) -> list[str]:
    inner = re.sub(r"[(\[（）)\]]", " ", group)
    found = re.findall(r"[A-J]|(?<![A-Za-z])[a-j](?![a-z])", inner)  # "et", "and" are words, not letters
    return sorted({x.upper() for x in found})


def extract_answers(text: str, n_options: int) -> list[str]:
    """The answer letters in a model's reply (empty list if none can be found).

    In order: a reply that opens with its letter(s) (``B.``, ``(B)``, ``**B**``, ``A, C``); else the first answer
    introduced by a label in any course language ("the answer is C", "Answer: **B**", "答案是C",
    "正确答案为B", "正解はBです", "La bonne réponse est C", "La respuesta correcta es B", "Правильный ответ: C",
    MMedLM's "OPTION A IS CORRECT", multi-answer lists like "A et C" or "ACD"); else a letter followed by a verdict
    ("B is correct", "Bが正解"). Lower-case letters count only when they stand alone ("answer is (c)"), so the
    article in "A deficiency of ..." or "the answer is a deficiency" is no answer; fullwidth and Cyrillic
    look-alike letters count. A letter outside the options makes the reply unreadable (``[]``).
    """
    t = _EMPHASIS.sub("", unicodedata.normalize("NFKC", text).translate(_HOMOGLYPHS))
    valid = LETTERS[:n_options]
    match = _LEADING.match(t)
    if match is None:
        found = [m for pattern in (_LABELLED, _VERDICT) for m in pattern.finditer(t) if _stands_alone(m, t)]
        match = min(found, key=lambda m: m.start()) if found else None
    if match is None:
        return []
    letters = _letters_in(match.group("list"))
    return letters if letters and all(x in valid for x in letters) else []


# --------------------------------------------------------------------------- moving the answer

_OPTION_WORD = r"(?i:option|choice|proposition|opci[oó]n|вариант|réponse|respuesta|answer|ответ)s?"
_CJK_NEAR = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff08\uff09：，。、]"
_ALONE = r"(?![A-Za-z0-9])"
_PAIR_WORD = r"(?:and|et|y|и|or|ou|o|или)"
_LETTER_REFS = [  # each pattern marks its letters with named groups
    re.compile(rf"{_OPTION_WORD} ?(?P<x>[A-J]){_ALONE}"),  # "option B", "вариант C"
    re.compile(rf"(?:选项|選択肢)(?P<x>[A-J]){_ALONE}"),  # "选项B"
    re.compile(r"[(\[（] ?(?P<x>[A-J]) ?[)\]）]"),  # "(B)"
    re.compile(rf"(?<![A-Za-z0-9])(?P<x>[A-J])(?=\)| ?{_CJK_NEAR})"),  # "B)", "B是"
    re.compile(rf"(?<={_CJK_NEAR})(?P<x>[A-J]){_ALONE}"),  # "是B"
    re.compile(rf"(?<![A-Za-z0-9])(?P<x>[A-J])\)? {_PAIR_WORD} \(?(?P<y>[A-J]){_ALONE}"),  # "A and C", "(A) or (C)"
]
_LONE_CAPITAL = re.compile(r"(?<![A-Za-z0-9'’\-])[A-J](?![A-Za-z0-9'’\-])")
_ARTICLE = re.compile(r"A(?= +[^\W\d_])")  # English "A patient", Spanish "A menudo": a word, not option A


def relabel_letters(text: str, mapping: Mapping[str, str]) -> str | None:
    """``text`` (a rationale) with its option-letter references moved by ``mapping`` (old letter -> new), or
    None when a lone capital letter in it cannot be told apart from an option reference (the caller then leaves
    the item as it is).

    A reference is a letter after an option word ("option B", "選択肢B", "вариант C"), in brackets ("(D)"),
    before ")" or next to Chinese/Japanese text ("B是", "Aは"), or in a pair ("A and C")::

        >>> relabel_letters("Option B is wrong; (C) fits, as does A and D. 选项E错误。", dict(zip("ABCDE", "EDCBA")))
        'Option D is wrong; (C) fits, as does E and B. 选项A错误。'
        >>> relabel_letters("A patient with vitamin B12 deficiency ...", {"A": "B", "B": "A"})
        'A patient with vitamin B12 deficiency ...'
        >>> relabel_letters("B is the answer.", {"A": "B", "B": "A"}) is None
        True
    """
    spans: dict[int, str] = {}
    for pattern in _LETTER_REFS:
        for m in pattern.finditer(text):
            for group, letter in m.groupdict().items():
                if letter:
                    spans[m.start(group)] = letter
    for m in _LONE_CAPITAL.finditer(text):
        if m.start() not in spans and not _ARTICLE.match(text, m.start()):
            return None
    chars = list(text)
    for pos, letter in spans.items():
        chars[pos] = mapping.get(letter, letter)
    return "".join(chars)
