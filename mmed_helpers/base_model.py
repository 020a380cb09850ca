"""Build or locate the base model a run starts from, and record where it is for the later notebooks.

``model.base_model`` in the profile is one of:

* ``tiny`` - the embedded smoke model, built offline into ``<run_dir>/models/base``;
* a local directory holding a Hugging Face model (``config.json`` + weights);
* a Hugging Face Hub id such as ``meta-llama/Meta-Llama-3-8B-Instruct`` - taken from the local cache, and
  downloaded into it when the profile is online (gated models need an accepted licence and a token).

Notebook 00 calls :func:`prepare_base_model`; later notebooks call :func:`resolve_base_model`::

    >>> from mmed_helpers.config import load_profile
    >>> info = prepare_base_model(load_profile("smoke"), "/tmp/run")
    >>> resolve_base_model("/tmp/run").path == info.path
    True
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .artifacts import atomic_write_text
from .config import Profile
from .tiny import build_tiny_model

RECORD = "base_model.json"
WEIGHT_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja")


class BaseModelError(RuntimeError):
    """The base model cannot be found or fetched; the message says what to do."""


@dataclass
class BaseModelInfo:
    name: str
    """What the profile asked for (``tiny``, a path or a hub id)."""
    path: str
    """Absolute local directory holding config, tokenizer and weights."""
    source: str
    """``tiny``, ``local`` or ``hub``."""


def prepare_base_model(profile: Profile, run_dir: str | Path) -> BaseModelInfo:
    """Build (tiny) or locate/download (local path, hub id) the base model; record it in the run directory."""
    run = Path(run_dir).expanduser().resolve()
    name = profile.model.base_model
    if name == "tiny":
        path = build_tiny_model(run / "models" / "base", profile.tiny)
        info = BaseModelInfo(name, str(path), "tiny")
    elif Path(name).expanduser().is_dir() or name.startswith(("/", "./", "../", "~")):
        info = BaseModelInfo(name, str(check_model_dir(Path(name).expanduser().resolve())), "local")
    else:
        info = BaseModelInfo(name, str(fetch_hub_model(name, offline=profile.offline)), "hub")
    atomic_write_text(run / RECORD, json.dumps(asdict(info), indent=2) + "\n")
    return info


def resolve_base_model(run_dir: str | Path) -> BaseModelInfo:
    """The base model recorded by notebook 00 for this run."""
    record = Path(run_dir).expanduser().resolve() / RECORD
    if not record.is_file():
        raise BaseModelError(f"no base model recorded in {record.parent}: run notebook 00_setup first")
    info = BaseModelInfo(**json.loads(record.read_text(encoding="utf-8")))
    check_model_dir(Path(info.path))
    return info


def check_model_dir(path: Path) -> Path:
    """Check that ``path`` looks like a Hugging Face causal-LM directory; return it."""
    if not path.is_dir():
        raise BaseModelError(f"model directory {path} not found; set model.base_model to an existing directory")
    if not (path / "config.json").is_file():
        raise BaseModelError(f"{path} has no config.json: it is not a Hugging Face model directory")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise BaseModelError(f"{path} has no weights (*.safetensors or *.bin)")
    return path


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

    offline = offline or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
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


def describe_model(path: str | Path) -> dict[str, object]:
    """Architecture facts read from ``config.json`` and the safetensors headers (no weights are loaded).

    >>> describe_model("/tmp/run/models/base")["architecture"]
    'LlamaForCausalLM'
    """
    p = check_model_dir(Path(path))
    top = json.loads((p / "config.json").read_text(encoding="utf-8"))
    cfg = top.get("text_config", top)  # multimodal wrappers keep the LM under text_config
    return {
        "architecture": (top.get("architectures") or ["?"])[0],
        "parameters": count_parameters(p),
        "layers": cfg.get("num_hidden_layers"),
        "hidden_size": cfg.get("hidden_size"),
        "attention_heads": cfg.get("num_attention_heads"),
        "kv_heads": cfg.get("num_key_value_heads"),
        "vocab_size": cfg.get("vocab_size"),
        "context_length": cfg.get("max_position_embeddings"),
        "dtype": cfg.get("dtype") or cfg.get("torch_dtype"),
    }


def count_parameters(path: str | Path) -> int:
    """Number of parameters stored in a directory's ``*.safetensors`` files, read from their headers only."""
    import struct

    total = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                size = 1
                for d in meta["shape"]:
                    size *= d
                total += size
    return total


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
