"""Every environment variable the course reads or sets, and the one rule for reading a yes/no flag.

    >>> import os; os.environ["MMED_DISABLE_UNSLOTH"] = "yes"
    >>> unsloth_disabled()
    True

Importing this module is cheap (no torch), so it can run before anything reads ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

TRUE = ("1", "true", "yes", "on")

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""Set for an offline profile: the Hugging Face libraries use their local caches only."""
QUIET_ENV = {"UNSLOTH_DISABLE_STATISTICS": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Set for every run: no usage statistics, no tokenizer fork warnings."""
DISABLE_UNSLOTH = "MMED_DISABLE_UNSLOTH"
"""``1``: train with plain transformers + PEFT even where Unsloth is installed (same as
``MMED_TRAIN_BACKEND=peft``)."""
TRAIN_BACKEND = "MMED_TRAIN_BACKEND"
"""``auto`` (default): Unsloth on a CUDA GPU, transformers + PEFT on a CPU (Unsloth has no CPU kernels; its CPU
fallback measured 4.5x slower per QLoRA step than plain PEFT); ``unsloth``: Unsloth wherever it imports;
``peft``: transformers + PEFT everywhere."""
TRAIN_BACKENDS = ("auto", "unsloth", "peft")
RUNS_DIR = "MMED_RUNS_DIR"
"""Where ``runs/<profile>`` goes when no run directory is given (default: the checkout's ``runs/``)."""
PROFILE = "MMED_PROFILE"
"""The profile a notebook opens with when no one passes one (its parameters cell reads it; the Colab/Kaggle setup
cell sets ``colab``). Default ``smoke``."""
CACHE_DIR = "MMED_CACHE_DIR"
"""Where built models are cached across runs (default ``~/.cache/mmed-course``; the pre-trained tiny model)."""


class _HasOffline(Protocol):
    offline: bool


def flag(name: str) -> bool:
    """True if the environment variable ``name`` is set to 1 / true / yes / on (any case)."""
    return os.environ.get(name, "").strip().lower() in TRUE


def hub_offline() -> bool:
    """True when the Hugging Face Hub must not be contacted (``HF_HUB_OFFLINE``)."""
    return flag("HF_HUB_OFFLINE")


def unsloth_disabled() -> bool:
    """True when ``MMED_DISABLE_UNSLOTH`` asks for the plain transformers + PEFT path."""
    return flag(DISABLE_UNSLOTH)


def train_backend() -> str:
    """The training backend asked for: ``MMED_TRAIN_BACKEND`` (one of :data:`TRAIN_BACKENDS`), ``peft`` when
    ``MMED_DISABLE_UNSLOTH`` is set, else ``auto``."""
    if unsloth_disabled():
        return "peft"
    value = os.environ.get(TRAIN_BACKEND, "").strip().lower() or "auto"
    if value not in TRAIN_BACKENDS:
        raise ValueError(f"{TRAIN_BACKEND} must be one of {', '.join(TRAIN_BACKENDS)}, got {value!r}")
    return value


def runs_dir() -> Path | None:
    """``MMED_RUNS_DIR`` as a path, or None when it is not set."""
    value = os.environ.get(RUNS_DIR, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """``MMED_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmed-course``, else ``~/.cache/mmed-course``."""
    value = os.environ.get(CACHE_DIR, "").strip()
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache").expanduser() / "mmed-course"


def runtime_env(profile: _HasOffline) -> dict[str, str]:
    """Environment variables a run of ``profile`` needs (offline switches for offline profiles)."""
    env = dict(QUIET_ENV)
    if profile.offline:
        env.update(OFFLINE_ENV)
    return env
