"""The one JSON Lines reader: every line with its ``file:line`` address, and bad lines reported, not raised.

Callers decide what a bad line means: the bundled corpus and seeds refuse it (they are ours), a benchmark file
counts and skips it, the resumable store counts it as corrupt::

    >>> for line in read_jsonl("seeds.jsonl"):
    ...     if line.error:
    ...         print(f"{line.where}: {line.error}")     # seeds.jsonl:7: not valid JSON (Expecting ',' ...)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class JsonlLine:
    where: str
    """``<file name>:<line number>`` (1-based), for messages."""
    record: Any
    """The parsed value (``None`` when ``error`` is set)."""
    error: str | None = None
    """Why the line is not valid JSON, e.g. ``not valid JSON (Expecting value)``."""


def parse_jsonl(text: str, name: str) -> Iterator[JsonlLine]:
    """The non-blank lines of ``text`` (the contents of file ``name``), parsed one by one."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            yield JsonlLine(where, json.loads(line))
        except json.JSONDecodeError as exc:
            yield JsonlLine(where, None, f"not valid JSON ({exc.msg})")


def read_jsonl(path: str | Path) -> Iterator[JsonlLine]:
    """The non-blank lines of the UTF-8 file ``path``, parsed one by one."""
    p = Path(path)
    return parse_jsonl(p.read_text(encoding="utf-8"), p.name)
