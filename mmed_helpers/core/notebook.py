"""What every notebook does first: load its profile, set the process up, and know where its artifacts go.

    >>> from mmed_helpers.core.notebook import start
    >>> step = start("setup", profile="smoke", run_dir="/tmp/run", overrides={"seed": 1})
    >>> step.out_dir.name, step.cfg.seed
    ('00_setup', 1)
    >>> step.run.ift                          # every artifact of the run, by name (core.layout)
    PosixPath('/tmp/run/01_generate_qa/mmed_ift')

Importing this module is cheap (no torch), so it can run before anything reads ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import write_manifest
from .config import Profile, load_profile
from .flags import runtime_env
from .layout import RunLayout, default_run_dir, step_folder


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (when installed) for reproducible runs."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


@dataclass
class Step:
    """A notebook's handle on its run: profile, the run's layout and the step's own output folder."""

    name: str
    """The step's folder (and notebook) name, e.g. ``03_stage1_dora``."""
    cfg: Profile
    run: RunLayout
    out_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def run_dir(self) -> Path:
        return self.run.root

    def write_manifest(self, **kwargs: Any) -> Path:
        """``manifest.json`` in ``out_dir`` with the full resolved profile, the overrides and the wall time."""
        timings = {"wall": time.perf_counter() - self.started, **kwargs.pop("timings", {})}
        params = {"overrides": self.overrides, "profile": self.cfg.to_dict(), **kwargs.pop("parameters", {})}
        return write_manifest(
            self.out_dir,
            step=self.name,
            profile=self.cfg.name,
            parameters=params,
            seed=self.cfg.seed,
            timings=timings,
            **kwargs,
        )


def start(
    step: str,
    profile: str = "smoke",
    run_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Step:
    """Load ``profile`` with ``overrides``, set environment and seeds, and create the folder of ``step`` (a key
    of :data:`~mmed_helpers.core.layout.STEPS`: ``setup``, ``generate``, ``translate``, ``stage1``, ...)."""
    folder = step_folder(step)
    cfg = load_profile(profile, overrides=overrides)
    os.environ.update(runtime_env(cfg))
    seed_everything(cfg.seed)
    run = RunLayout(run_dir if run_dir else default_run_dir(cfg.name))
    out = run.step_dir(step)
    out.mkdir(parents=True, exist_ok=True)
    return Step(name=folder, cfg=cfg, run=run, out_dir=out, overrides=dict(overrides or {}))
