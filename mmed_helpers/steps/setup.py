"""Step 00 (notebook ``00_setup``): what this machine offers, and the base model the run starts from.

**The machine**: accelerator, package versions and how Unsloth will run (on a CUDA GPU; a CPU trains with
transformers + PEFT). ``import unsloth`` patches transformers, trl and peft for the whole process and takes
seconds, so :func:`unsloth_status` asks a short-lived subprocess instead of importing it here.

**The base model**: ``model.base_model`` in the profile is one of

* ``tiny`` - the embedded smoke model, built offline into the run (``run.tiny_base``);
* a local directory holding a Hugging Face model (``config.json`` + weights);
* a Hugging Face Hub id such as ``meta-llama/Meta-Llama-3-8B-Instruct`` - taken from the local cache, and
  downloaded into it when the profile is online (gated models need an accepted licence and a token).

:func:`prepare_base_model` records it in the run; later notebooks read it back with ``run.base_model()``::

    >>> from mmed_helpers.core.config import load_profile
    >>> from mmed_helpers.core.layout import RunLayout
    >>> info = prepare_base_model(load_profile("smoke"), RunLayout("/tmp/run"))
    >>> RunLayout("/tmp/run").base_model().path == info.path
    True
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.artifacts import package_versions
from ..core.config import Profile
from ..core.flags import QUIET_ENV, TRAIN_BACKEND, hub_offline, train_backend
from ..core.layout import RunLayout
from ..core.modeldir import BaseModelError, BaseModelInfo, check_model_dir
from ..core.tiny import build_tiny_model_cached

WEIGHT_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja")


# --------------------------------------------------------------------------- the machine

_PROBE = r"""
import json
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
    """How Unsloth runs here: ``gpu`` (fast path), ``cpu-fallback`` (forced onto a CPU), ``not-used``
    (installed, but training takes transformers + PEFT: no CUDA GPU, or ``MMED_TRAIN_BACKEND=peft``), or
    ``unavailable`` (with the error)."""

    mode: str
    version: str | None
    error: str | None = None

    @property
    def description(self) -> str:
        if self.mode == "gpu":
            return f"Unsloth {self.version}: CUDA GPU fast path"
        if self.mode == "cpu-fallback":
            return f"Unsloth {self.version}: no GPU found, Unsloth's CPU fallback (forced by {TRAIN_BACKEND}=unsloth)"
        if self.mode == "not-used":
            return (
                f"Unsloth {self.version} installed, not used: training runs on transformers + PEFT "
                f"({self.error}; {TRAIN_BACKEND}=unsloth forces Unsloth)"
            )
        return f"Unsloth unavailable ({self.error}); training falls back to transformers + PEFT"


def unsloth_status(timeout: float = 300.0) -> UnslothStatus:
    """Import Unsloth in a subprocess and report whether it runs on the GPU or its CPU fallback. Where training
    will not use it (``MMED_TRAIN_BACKEND=peft``, or ``auto`` without a CUDA GPU) it is not imported (that takes
    seconds): the installed version comes from the package metadata."""
    import torch

    choice = train_backend()
    if choice == "peft" or (choice == "auto" and not torch.cuda.is_available()):
        try:
            version = importlib.metadata.version("unsloth")
        except importlib.metadata.PackageNotFoundError:
            return UnslothStatus("unavailable", None, "the unsloth package is not installed")
        why = f"{TRAIN_BACKEND}=peft" if choice == "peft" else "no CUDA GPU, and Unsloth has no CPU kernels"
        return UnslothStatus("not-used", version, why)
    env = {**QUIET_ENV, **os.environ}
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
        "hf_hub_offline": hub_offline(),
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


# --------------------------------------------------------------------------- the base model


def prepare_base_model(profile: Profile, run: RunLayout) -> BaseModelInfo:
    """Build (tiny) or locate/download (local path, hub id) the base model; record it in the run."""
    name = profile.model.base_model
    if name == "tiny":
        path = build_tiny_model_cached(run.tiny_base, profile.tiny)
        info = BaseModelInfo(name, str(path), "tiny")
    elif Path(name).expanduser().is_dir() or name.startswith(("/", "./", "../", "~")):
        info = BaseModelInfo(name, str(check_model_dir(Path(name).expanduser().resolve())), "local")
    else:
        info = BaseModelInfo(name, str(fetch_hub_model(name, offline=profile.offline)), "hub")
    run.write_base_model(info)
    return info


def fetch_hub_model(
    repo_id: str, offline: bool = False, revision: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """Return the local snapshot of ``repo_id``: from the cache, or downloaded unless offline.

    Offline (``offline`` or ``HF_HUB_OFFLINE=1``) only the local cache is used. Errors name the fix: a gated
    model needs its licence accepted and a token (``hf auth login`` or ``HF_TOKEN``).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = offline or hub_offline()
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(WEIGHT_PATTERNS),
            local_files_only=offline,
            cache_dir=cache_dir,
        )
    except GatedRepoError:
        raise BaseModelError(
            f"{repo_id} is gated: accept its licence on its Hugging Face page, then run `hf auth login` "
            "or set HF_TOKEN, and rerun"
        ) from None
    except RepositoryNotFoundError:
        raise BaseModelError(
            f"{repo_id} was not found on the Hugging Face Hub (or it is private and no token is set)"
        ) from None
    except LocalEntryNotFoundError:
        raise BaseModelError(
            f"{repo_id} is not in the local Hugging Face cache and the run is offline: download it once "
            f"with network access (`hf download {repo_id}`) or set model.base_model to a local directory"
        ) from None
    return check_model_dir(Path(path))


def tokenizer_fertility(tokenizer, passages) -> list[dict[str, object]]:
    """Per language: characters, tokens and tokens per 100 characters of the passages' text.

    Scripts a tokenizer has learned few merges for cost more tokens per character, so the same context
    window holds less text and training costs more in that language.
    """
    stats: dict[str, dict[str, int]] = {}
    for p in passages:
        s = stats.setdefault(p.lang, {"passages": 0, "characters": 0, "tokens": 0})
        s["passages"] += 1
        s["characters"] += len(p.text)
        s["tokens"] += len(tokenizer(p.text, add_special_tokens=False, verbose=False)["input_ids"])
    return [
        {"lang": lang, **s, "tokens_per_100_chars": round(100 * s["tokens"] / max(s["characters"], 1), 1)}
        for lang, s in stats.items()
    ]


def corpus_continuations(model_path: str | Path, passages, per_language: int = 1, max_new_tokens: int = 20):
    """Greedy continuations of the opening of bundled passages (the first passage of each language, or
    ``per_language`` of them): the prompt is the title and the first six words (twelve characters of CJK text)
    of the text; the row also holds what the passage really says next."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.quality import cjk_share

    tok = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path)).eval()
    seen: dict[str, int] = {}
    rows = []
    for p in passages:
        if seen.get(p.lang, 0) >= per_language:
            continue
        seen[p.lang] = seen.get(p.lang, 0) + 1
        text = p.paragraphs[0]
        cut = 12 if cjk_share(text) > 0.3 else len(" ".join(text.split()[:6]))  # CJK text has no spaces
        prompt = p.title + "\n\n" + text[:cut]
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        rows.append(
            {
                "lang": p.lang,
                "prompt": text[:cut],
                "model continues": tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True),
                "the passage continues": text[cut : cut + 80],
            }
        )
    return rows
