"""Resumable batch work: an append-only JSONL store keyed by id, and a runner that only does what is missing.

Every long loop of the course that calls a model (generation in notebook 01, the translation cycle in notebook
02) is a list of :class:`Job` objects with stable ids. :func:`run_jobs` hands the jobs not yet done to a worker
batch by batch and appends each batch's results to a :class:`JsonlStore` as soon as it returns, so a crash or a
kill loses at most the batch in flight, and a rerun neither repeats nor duplicates work::

    >>> store = JsonlStore("/tmp/raw.jsonl")
    >>> run_jobs([Job("a", "text")], lambda batch: [Completion(j.payload.upper()) for j in batch], store, 8)
    1
    >>> store.records["a"]["output"]
    'TEXT'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jsonl import parse_jsonl
from .llm import Completion


class JsonlStore:
    """Append-only JSON Lines file keyed by ``id``: the crash-safe record of every model output.

    Opening it only reads the file, never writes it (notebooks open stores just to show them). A last line
    without its newline (a write cut short by a kill) is kept if it is a whole record, else it is skipped and
    counted in ``recovered``; the next ``append`` first ends that line, so the cut bytes stay in the file as
    one unreadable line (counted in ``corrupt`` from then on) and no earlier line is ever touched. ``append``
    writes whole lines and fsyncs, so after it returns the records survive a crash. Records with an ``error``
    are kept for the record but do not count as done, so a rerun tries them again; a later success for the
    same id supersedes them.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict[str, Any]] = {}
        self.recovered = 0
        self.corrupt = 0
        self._unterminated = False
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        tail = data[end:]
        self._unterminated = bool(tail)
        for line in parse_jsonl(data[:end].decode("utf-8", errors="replace"), self.path.name):
            self._take(line.record if not line.error else None)
        if tail.strip():  # the last line has no newline: an interrupted write, unless it is a whole record
            try:
                rec = json.loads(tail.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                rec = None
            if isinstance(rec, dict) and "id" in rec:
                self._take(rec)
            else:
                self.recovered += 1

    def _take(self, rec: Any) -> None:
        if not isinstance(rec, dict) or "id" not in rec:
            self.corrupt += 1
            return
        old = self.records.get(rec["id"])
        if old is None or old.get("error") or not rec.get("error"):
            self.records[rec["id"]] = rec

    def done(self, rid: str) -> bool:
        rec = self.records.get(rid)
        return rec is not None and not rec.get("error")

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            if self._unterminated:  # end the cut line first, so it cannot swallow the next record
                fh.write("\n")
                self._unterminated = False
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for rec in records:
            if not rec.get("error") or not self.done(rec["id"]):
                self.records[rec["id"]] = rec

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class Job:
    """One unit of model work: a stable ``id``, what the worker needs (``payload``), and fields (``meta``)
    copied into the stored record."""

    id: str
    payload: Any
    meta: dict[str, Any] = field(default_factory=dict)


def run_jobs(
    jobs: Sequence[Job],
    worker: Callable[[list[Job]], list[Completion]],
    store: JsonlStore,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run ``worker`` on every job not yet done in ``store``, ``batch_size`` at a time, appending each batch's
    outputs as soon as it returns. Returns how many jobs ran. ``progress(n)`` is called after each batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    todo = [j for j in jobs if not store.done(j.id)]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        outs = worker(batch)
        if len(outs) != len(batch):
            raise RuntimeError(f"worker returned {len(outs)} results for {len(batch)} jobs")
        store.append(
            {
                "id": j.id,
                **j.meta,
                "output": o.text,
                "error": o.error,
                **({"structured": o.structured} if getattr(o, "structured", None) is not None else {}),
            }
            for j, o in zip(batch, outs, strict=True)
        )
        if progress:
            progress(len(batch))
    return len(todo)


class StoreMismatch(RuntimeError):
    """The outputs in a folder of stores were made with other settings than the run asks for now."""


def claim_stores(record: str | Path, identity: dict[str, Any], fix: str, growing: str = "prompts") -> None:
    """Check that the stores beside ``record`` were made with ``identity`` (backend, model, generation settings,
    prompt hashes), and record it there on first use. Reusing an output made with another temperature, model
    or prompt would mix two settings in one dataset without a word, since job ids do not carry settings: a
    difference raises :class:`StoreMismatch` naming it and ``fix``. The ``growing`` mapping may gain keys (a
    language added to the run brings its prompts); the keys both hold must agree. Stores made before the course
    recorded this are adopted as they are."""
    path = Path(record)
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in identity.keys() | old.keys() if k != growing and old.get(k) != identity.get(k))
        shared = old.get(growing, {}).keys() & identity.get(growing, {}).keys()
        changed += sorted(f"{growing}[{k}]" for k in shared if old[growing][k] != identity[growing][k])
        if changed:
            raise StoreMismatch(f"the outputs in {path.parent} were made with a different {', '.join(changed)}: {fix}")
        merged = {**identity, growing: {**old.get(growing, {}), **identity.get(growing, {})}}
        if merged == old:
            return
        identity = merged
    from .artifacts import atomic_write_text

    atomic_write_text(path, json.dumps(identity, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
