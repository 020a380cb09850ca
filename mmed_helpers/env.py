"""What this machine offers the course: accelerator, package versions and how Unsloth will run.

``import unsloth`` patches transformers, trl and peft for the whole process and takes seconds, so
:func:`unsloth_status` asks a short-lived subprocess instead of importing it here::

    >>> from mmed_helpers.env import environment_report
    >>> report = environment_report()
    >>> report["device"] in ("cuda", "cpu")
    True
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from .artifacts import package_versions

_PROBE = r"""
import json, os, sys
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
try:
    import unsloth  # noqa: F401  (must come before transformers)
    import torch
    info = {"importable": True, "version": getattr(unsloth, "__version__", None),
            "cuda": bool(torch.cuda.is_available()), "error": None}
except Exception as exc:  # report, never raise: the caller decides
    info = {"importable": False, "version": None, "cuda": False,
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
print("MMED_UNSLOTH_STATUS=" + json.dumps(info), flush=True)
"""


@dataclass
class UnslothStatus:
    """How Unsloth runs here: ``gpu`` (fast path), ``cpu-fallback``, or ``unavailable`` (with the error)."""

    mode: str
    version: str | None
    error: str | None = None

    @property
    def description(self) -> str:
        if self.mode == "gpu":
            return f"Unsloth {self.version}: CUDA GPU fast path"
        if self.mode == "cpu-fallback":
            return f"Unsloth {self.version}: no GPU found, CPU fallback (transformers + PEFT on CPU)"
        return f"Unsloth unavailable ({self.error}); training falls back to transformers + PEFT"


def unsloth_status(timeout: float = 300.0) -> UnslothStatus:
    """Import Unsloth in a subprocess and report whether it runs on the GPU or its CPU fallback."""
    env = dict(os.environ)
    env.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return UnslothStatus("unavailable", None, f"import unsloth took longer than {timeout:.0f} s")
    for line in proc.stdout.splitlines():
        if line.startswith("MMED_UNSLOTH_STATUS="):
            info = json.loads(line.split("=", 1)[1])
            if not info["importable"]:
                return UnslothStatus("unavailable", None, info["error"])
            return UnslothStatus("gpu" if info["cuda"] else "cpu-fallback", info["version"])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return UnslothStatus("unavailable", None, f"probe exited with {proc.returncode}: {tail[0][:300]}")


def torch_info() -> dict[str, Any]:
    """torch build and accelerator facts (CUDA build or CPU build, GPU name and memory, bf16 support)."""
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu_name=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


def environment_report(check_unsloth: bool = True) -> dict[str, Any]:
    """One dict with Python, platform, torch/accelerator facts, package versions and the Unsloth mode."""
    t = torch_info()
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "device": "cuda" if t["cuda_available"] else "cpu",
        **t,
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true", "True", "YES", "yes"),
        "packages": package_versions(),
    }
    if check_unsloth:
        report["unsloth"] = asdict(unsloth_status())
    return report


def report_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Flatten a report into (item, value) rows for a table."""
    rows = [(k, str(v)) for k, v in report.items() if k not in ("packages", "unsloth")]
    if "unsloth" in report:
        rows.append(("unsloth mode", UnslothStatus(**report["unsloth"]).description))
    rows += [(f"package {k}", str(v) if v else "not installed") for k, v in report["packages"].items()]
    return rows
