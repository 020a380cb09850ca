"""Record types of the course's datasets and how they are rendered as chat messages for SFT.

>>> item = MCItem(id="x", lang="en", question="Which vitamin ...?", options=["B1", "B12", "C", "D"],
...               answer="B", rationale="Cobalamin is ...")
>>> item.to_messages()[1]["content"]
'Answer: B. B12\\nRationale: Cobalamin is ...'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LETTERS = "ABCDE"

# How a multiple-choice item is asked and answered, per language (prompt header, answer and rationale labels).
MC_LABELS: dict[str, dict[str, str]] = {
    "en": {"ask": "Choose the single best answer.", "answer": "Answer", "rationale": "Rationale"},
    "zh": {"ask": "请选择唯一的最佳答案。", "answer": "答案", "rationale": "解析"},
    "ja": {"ask": "最も適切な選択肢を一つ選べ。", "answer": "答え", "rationale": "解説"},
    "fr": {"ask": "Choisissez la meilleure réponse.", "answer": "Réponse", "rationale": "Justification"},
    "ru": {"ask": "Выберите один правильный ответ.", "answer": "Ответ", "rationale": "Обоснование"},
    "es": {"ask": "Elija la única respuesta correcta.", "answer": "Respuesta", "rationale": "Justificación"},
}


@dataclass
class IFTSample:
    """A free-form medical instruction sample (MMed-IFT): a question and its answer."""

    id: str
    lang: str
    question: str
    answer: str
    source_id: str = ""
    """The corpus passage it was generated from ("" for hand-written seeds)."""
    origin: str = "generated"
    """``generated`` or ``seed``."""
    specialty: str = ""
    kind: str = field(default="ift", init=False)

    def to_messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.question}, {"role": "assistant", "content": self.answer}]

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "messages": self.to_messages()}


@dataclass
class MCItem:
    """An exam-style multiple-choice item with a rationale (MMed-IFT-MC). ``options`` are in letter order."""

    id: str
    lang: str
    question: str
    options: list[str]
    answer: str
    rationale: str
    source_id: str = ""
    origin: str = "generated"
    specialty: str = ""
    kind: str = field(default="mc", init=False)

    @property
    def answer_text(self) -> str:
        return self.options[LETTERS.index(self.answer)]

    def prompt(self) -> str:
        """The question as the model sees it: stem, lettered options, instruction (in the item's language)."""
        labels = MC_LABELS.get(self.lang, MC_LABELS["en"])
        opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options))
        return f"{self.question}\n\n{opts}\n\n{labels['ask']}"

    def target(self) -> str:
        labels = MC_LABELS.get(self.lang, MC_LABELS["en"])
        return f"{labels['answer']}: {self.answer}. {self.answer_text}\n{labels['rationale']}: {self.rationale}"

    def to_messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt()}, {"role": "assistant", "content": self.target()}]

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "messages": self.to_messages()}
