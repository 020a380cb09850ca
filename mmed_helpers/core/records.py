"""Record types of the course's datasets, their chat form for SFT, and how they are kept on disk.

Notebook 01 writes MMed-IFT and MMed-IFT-MC, notebook 02 their kept translations; all four are Hugging Face
datasets saved with :func:`save_dataset` and read back with :func:`load_items`:

>>> item = MCItem(id="x", lang="en", question="Which vitamin ...?", options=["B1", "B12", "C", "D"],
...               answer="B", rationale="Cobalamin is ...")
>>> item.to_messages()[1]["content"]
'Answer: B. B12\\nCobalamin is ...'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import atomic_directory
from .mcformat import LETTERS, answer_letters, mc_prompt, mc_target


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
    """``generated``, ``seed`` or ``translated``."""
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
    """The correct letter, or several joined by commas (``"A,C"``)."""
    rationale: str
    source_id: str = ""
    origin: str = "generated"
    specialty: str = ""
    kind: str = field(default="mc", init=False)

    @property
    def answers(self) -> list[str]:
        """The correct letters: one (``"B"``) or several (``"A,C"``, as MMedBench's Japanese and French items)."""
        return answer_letters(self.answer, len(self.options))

    @property
    def answer_text(self) -> str:
        return "; ".join(self.options[LETTERS.index(a)] for a in self.answers)

    def prompt(self) -> str:
        """The question as the model sees it (:func:`~mmed_helpers.core.mcformat.mc_prompt`); an item with
        several correct answers asks for all of them, exactly as evaluation does."""
        return mc_prompt(self.question, self.options, self.lang, multi=len(self.answers) > 1)

    def target(self) -> str:
        """The answer the model learns (:func:`~mmed_helpers.core.mcformat.mc_target`)."""
        return mc_target(self.answers, self.options, self.rationale, self.lang)

    def to_messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt()}, {"role": "assistant", "content": self.target()}]

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "messages": self.to_messages()}


Record = IFTSample | MCItem
KINDS = {"ift": IFTSample, "mc": MCItem}


# --------------------------------------------------------------------------- datasets on disk


def records_dataset(records: Sequence[dict[str, Any]], kind: str, float_columns: Sequence[str] = ()):
    """A Hugging Face ``Dataset`` of ``kind`` records (``to_record`` dicts) with explicit column types, so an
    empty set keeps its columns. ``float_columns`` are extra numeric columns (e.g. scores)."""
    from datasets import Dataset, Features, Value
    from datasets import Sequence as Seq

    text = Value("string")
    cols: dict[str, Any] = {"id": text, "lang": text, "question": text}
    cols.update({"answer": text} if kind == "ift" else {"options": Seq(text), "answer": text, "rationale": text})
    cols.update(
        {
            "source_id": text,
            "origin": text,
            "specialty": text,
            "kind": text,
            "messages": [{"role": text, "content": text}],
        }
    )
    cols.update({name: Value("float64") for name in float_columns})
    return Dataset.from_dict({name: [r[name] for r in records] for name in cols}, features=Features(cols))


def to_dataset(items: Sequence[Record], kind: str):
    """A Hugging Face ``Dataset`` in chat form (``messages``) plus the structured fields."""
    return records_dataset([it.to_record() for it in items], kind)


def save_dataset(dataset, path: str | Path) -> Path:
    """``save_to_disk`` into a temporary sibling, then swap it in: a crash never leaves half a dataset."""
    with atomic_directory(path) as tmp:
        dataset.save_to_disk(str(tmp), num_shards=1 if len(dataset) == 0 else None)  # an empty set still gets a file
    return Path(path)


def load_items(path: str | Path, kind: str) -> list[Record]:
    """Read a dataset saved with :func:`save_dataset` back into records of ``kind`` (``ift`` or ``mc``).

    Ask the run layout for the path (``run.require("ift")``): it names the notebook to run when it is missing."""
    from datasets import load_from_disk

    cls = KINDS[kind]
    names = [f.name for f in cls.__dataclass_fields__.values() if f.init]
    out: list[Record] = []
    for r in load_from_disk(str(path)):
        values = {n: r[n] for n in names}
        if kind == "mc":
            values["options"] = list(values["options"])
        out.append(cls(**values))
    return out
