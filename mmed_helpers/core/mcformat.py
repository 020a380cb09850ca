"""How a multiple-choice item is asked and answered: one format for generation, training and evaluation.

Stage 2 trains on :func:`mc_prompt` -> :func:`mc_target`; notebook 05 asks the same :func:`mc_prompt` and reads
the reply with :func:`extract_answers`, which reads back every target :func:`mc_target` writes (single- and
multi-answer, all six languages; a test holds the two together)::

    >>> mc_prompt("Which vitamin ...?", ["B1", "B12"], "en")
    'Which vitamin ...?\\n\\nA. B1\\nB. B12\\n\\nChoose the single best answer.'
    >>> mc_target(["B"], ["B1", "B12"], "Cobalamin is ...", "en")
    'Answer: B. B12\\nRationale: Cobalamin is ...'
    >>> extract_answers("Answer: B. B12", 2)
    ['B']

Lettered options as datasets ship them (``{"A": ..., "B": ...}`` or a list) become a list with
:func:`options_list`; answer keys such as MMedBench's ``"A,C"`` become letters with :func:`answer_letters`.
"""

from __future__ import annotations

import re
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
    """The assistant turn stage 2 trains on: the answer letter(s) with their text, then the rationale.

    One answer: ``Answer: B. B12``; several: ``Answer: A, C. first; third``."""
    chosen = [answers] if isinstance(answers, str) else list(answers)
    letters = letters_for(options)
    if not chosen or any(a not in letters for a in chosen):
        raise FormatError(f"answers {chosen} are not among the option letters {letters}")
    row = language_or_default(lang)
    texts = "; ".join(options[letters.index(a)] for a in chosen)
    return f"{row.answer_label}: {MULTI_SEPARATOR.join(chosen)}. {texts}\n{row.rationale_label}: {rationale}"


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
    """The sorted gold letters of an answer key: ``"B"``, ``"A,C"``, ``"A C"`` or ``"AC"``."""
    if not isinstance(value, str):
        raise FormatError(f"answer_idx must be a string of letters, got {value!r}")
    letters = [x for x in re.split(r"[,\s;]+", value.strip().upper()) if x]
    if len(letters) == 1 and len(letters[0]) > 1 and letters[0].isalpha():
        letters = list(letters[0])  # "AC"
    valid = LETTERS[:n_options]
    if not letters or any(x not in valid for x in letters) or len(set(letters)) != len(letters):
        raise FormatError(f"answer_idx {value!r} is not one or more of the option letters {valid}")
    return sorted(letters)


# --------------------------------------------------------------------------- reading replies

_HOMOGLYPHS = str.maketrans(
    {"А": "A", "В": "B", "С": "C", "Е": "E", "Ａ": "A", "Ｂ": "B", "Ｃ": "C", "Ｄ": "D", "Ｅ": "E"}
)
_LABELS = "(?i:" + "|".join(dict.fromkeys(w for row in TABLE.values() for w in row.answer_words)) + ")"
_AND = "|".join(dict.fromkeys(w for row in TABLE.values() for w in row.and_words))
_LIST = rf"([A-J](?:\s*(?:,|、|，|{_AND})\s*[A-J])*)"


def extract_answers(text: str, n_options: int) -> list[str]:
    """The answer letters in a model's reply (empty list if none can be found).

    Looks for a labelled answer first (``Answer: B``, ``Réponse : A et C``, ``答案：C``, ``答え：A、D``), then a
    letter at the start of the reply (``B.``, ``(B)``, ``B``). Fullwidth and Cyrillic look-alike letters count.
    """
    t = text.translate(_HOMOGLYPHS)
    valid = LETTERS[:n_options]
    m = re.search(_LABELS + r"\s*[:：]?\s*\(?" + _LIST + r"(?![A-Za-z])", t)
    if m is None:
        m = re.match(r"\s*\(?" + _LIST + r"(?:[).:\s]|$)", t)
    if m is None:
        return []
    letters = sorted(set(re.findall(r"[A-J]", m.group(1))))  # separators (et, and, и, ...) are lower case
    return letters if all(x in valid for x in letters) else []
