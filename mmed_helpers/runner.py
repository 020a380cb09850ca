"""Run the course's notebooks in order with papermill, for one profile, into one run directory.

Each notebook gets the parameters ``profile``, ``run_dir`` and ``overrides`` injected; its executed copy (saved
after every cell, so nothing is lost on a crash) goes to ``<run_dir>/notebooks/``. The run stops at the first
failing notebook and reports the failing cell's error; the summary lands in ``<run_dir>/run_summary.json``::

    >>> from mmed_helpers.runner import run_course
    >>> report = run_course("smoke", run_dir="/tmp/run", only=[0])
    >>> report.ok
    True
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .core.artifacts import atomic_write_text
from .core.config import load_profile
from .core.flags import runtime_env
from .core.layout import RunLayout, default_run_dir, project_root

NOTEBOOK_PATTERN = re.compile(r"^(\d{2})_[\w-]+\.ipynb$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class RunnerError(RuntimeError):
    """The run cannot start (no notebooks, bad selection); the message says what to change."""


@dataclass
class NotebookResult:
    number: int
    name: str
    status: str
    """``ok``, ``failed`` or ``not run``."""
    seconds: float = 0.0
    output: str | None = None
    error: str | None = None


@dataclass
class RunReport:
    profile: str
    run_dir: str
    results: list[NotebookResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.results)

    @property
    def failed(self) -> NotebookResult | None:
        return next((r for r in self.results if r.status == "failed"), None)

    def table(self) -> str:
        """The summary as an aligned text table."""
        rows = [("#", "notebook", "status", "wall time")]
        rows += [
            (f"{r.number:02d}", r.name, r.status, _fmt_seconds(r.seconds) if r.status != "not run" else "-")
            for r in self.results
        ]
        rows.append(("", "total", "ok" if self.ok else "FAILED", _fmt_seconds(sum(r.seconds for r in self.results))))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(lines) - 1, lines[1])
        return "\n".join(lines)


def notebooks_dir_default() -> Path:
    return project_root() / "notebooks"


def discover_notebooks(notebooks_dir: str | Path) -> list[Path]:
    """The course notebooks (``NN_name.ipynb``) in ``notebooks_dir``, in order."""
    d = Path(notebooks_dir)
    if not d.is_dir():
        raise RunnerError(f"notebooks directory {d} not found; run from the course checkout or pass --notebooks-dir")
    found = sorted(p for p in d.iterdir() if NOTEBOOK_PATTERN.match(p.name))
    if not found:
        raise RunnerError(f"no course notebooks (NN_name.ipynb) in {d}")
    return found


def select_notebooks(
    notebooks: list[Path], only: Iterable[int] | None = None, start_from: int | None = None
) -> list[Path]:
    """Filter by notebook number: ``only`` keeps those numbers, ``start_from`` keeps numbers >= it."""
    numbered = [(int(NOTEBOOK_PATTERN.match(p.name).group(1)), p) for p in notebooks]
    available = [n for n, _ in numbered]
    if only:
        wanted = set(only)
        missing = sorted(wanted - set(available))
        if missing:
            raise RunnerError(f"no notebook numbered {missing}; available: {available}")
        numbered = [(n, p) for n, p in numbered if n in wanted]
    if start_from is not None:
        numbered = [(n, p) for n, p in numbered if n >= start_from]
        if not numbered:
            raise RunnerError(f"no notebook numbered {start_from} or later; available: {available}")
    return [p for _, p in numbered]


def run_course(
    profile: str = "smoke",
    run_dir: str | Path | None = None,
    *,
    notebooks_dir: str | Path | None = None,
    only: Iterable[int] | None = None,
    start_from: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    kernel_name: str = "python3",
    progress_bar: bool = True,
    log: Callable[[str], None] = print,
) -> RunReport:
    """Execute the selected notebooks in order; stop at the first failure. Returns the report (never raises
    for a failing notebook; it raises :class:`~mmed_helpers.config.ConfigError` for a bad profile/override
    before any notebook starts)."""
    import papermill as pm

    overrides = dict(overrides or {})
    cfg = load_profile(profile, overrides=overrides)  # fail fast, one line, before any kernel starts
    profile_arg = str(Path(profile).resolve()) if str(profile).endswith((".yaml", ".yml")) else str(profile)
    layout = RunLayout(run_dir if run_dir else default_run_dir(cfg.name))
    run = layout.root
    nb_dir = Path(notebooks_dir).resolve() if notebooks_dir else notebooks_dir_default()
    chosen = select_notebooks(discover_notebooks(nb_dir), only, start_from)
    out_dir = layout.executed_notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(runtime_env(cfg))

    report = RunReport(profile=cfg.name, run_dir=str(run))
    report.results = [NotebookResult(int(p.name[:2]), p.stem, "not run") for p in chosen]
    log(f"mmed-course: profile {cfg.name!r}, run directory {run}, {len(chosen)} notebook(s)")
    for i, (nb, result) in enumerate(zip(chosen, report.results, strict=True), start=1):
        out_nb = out_dir / nb.name
        log(f"[{i}/{len(chosen)}] {nb.name} -> {out_nb}")
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb),
                str(out_nb),
                parameters={"profile": profile_arg, "run_dir": str(run), "overrides": overrides},
                kernel_name=kernel_name,
                cwd=str(nb.parent),
                progress_bar=progress_bar,
                request_save_on_cell_execute=True,
            )
            result.status = "ok"
        except Exception as exc:  # a failing notebook must not crash the runner: report it and stop
            result.status = "failed"
            result.error = describe_failure(exc)
        result.seconds = time.perf_counter() - t0
        result.output = str(out_nb)
        _save_summary(report)
        if result.status == "failed":
            log(f"FAILED {nb.name}: {result.error}")
            break
    log("")
    log(report.table())
    return report


def describe_failure(exc: BaseException) -> str:
    """A readable account of a notebook failure: the cell, the exception and the traceback's last lines."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        tb = [_ANSI.sub("", line) for line in (exc.traceback or [])]
        tail = "\n".join("    " + ln for chunk in tb[-3:] for ln in chunk.splitlines()[-6:])
        return f"cell [{exc.exec_count}] raised {exc.ename}: {exc.evalue}\n{tail}".rstrip()
    return f"{type(exc).__name__}: {_ANSI.sub('', str(exc)).strip()}"


def _save_summary(report: RunReport) -> None:
    data = {
        "profile": report.profile,
        "run_dir": report.run_dir,
        "ok": report.ok,
        "results": [asdict(r) for r in report.results],
    }
    atomic_write_text(RunLayout(report.run_dir).summary, json.dumps(data, indent=2) + "\n")


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60):02d} s"
