"""What every notebook does first: load its profile, set the process up, and know where its artifacts go.

    >>> from mmed_helpers.notebook import start
    >>> step = start("00_setup", profile="smoke", run_dir="/tmp/run", overrides={"seed": 1})
    >>> step.out_dir.name, step.cfg.seed
    ('00_setup', 1)

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

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
QUIET_ENV = {"UNSLOTH_DISABLE_STATISTICS": "1", "TOKENIZERS_PARALLELISM": "false"}


def runtime_env(profile: Profile) -> dict[str, str]:
    """Environment variables a run of ``profile`` needs (offline switches for offline profiles)."""
    env = dict(QUIET_ENV)
    if profile.offline:
        env.update(OFFLINE_ENV)
    return env


def project_root(start_dir: str | Path | None = None) -> Path:
    """The course checkout holding ``notebooks/`` (searched upwards from ``start_dir``), else ``start_dir``."""
    here = Path(start_dir or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "notebooks").is_dir() and (d / "mmed_helpers").is_dir():
            return d
    return here


def default_run_dir(profile_name: str) -> Path:
    """``$MMED_RUNS_DIR/<profile>`` if set, else ``<project root>/runs/<profile>``."""
    base = os.environ.get("MMED_RUNS_DIR")
    return (Path(base) if base else project_root() / "runs") / profile_name


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
    """A notebook's handle on its run: profile, run directory and its own output folder."""

    name: str
    cfg: Profile
    run_dir: Path
    out_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

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
    name: str,
    profile: str = "smoke",
    run_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Step:
    """Load ``profile`` with ``overrides``, set environment and seeds, and create ``<run_dir>/<name>/``."""
    cfg = load_profile(profile, overrides=overrides)
    os.environ.update(runtime_env(cfg))
    seed_everything(cfg.seed)
    run = Path(run_dir).expanduser().resolve() if run_dir else default_run_dir(cfg.name).resolve()
    out = run / name
    out.mkdir(parents=True, exist_ok=True)
    return Step(name=name, cfg=cfg, run_dir=run, out_dir=out, overrides=dict(overrides or {}))
