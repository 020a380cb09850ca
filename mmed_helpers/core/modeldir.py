"""Facts about a Hugging Face model directory, read from its files without loading any weights.

>>> check_model_dir(Path("/tmp/run/models/base"))
>>> describe_model("/tmp/run/models/base")["architecture"]
'LlamaForCausalLM'
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path


class BaseModelError(RuntimeError):
    """The base model cannot be found or fetched; the message says what to do."""


@dataclass
class BaseModelInfo:
    """Which base model a run starts from (recorded by notebook 00 in the run folder)."""

    name: str
    """What the profile asked for (``tiny``, a path or a hub id)."""
    path: str
    """Absolute local directory holding config, tokenizer and weights."""
    source: str
    """``tiny``, ``local`` or ``hub``."""


def check_model_dir(path: Path) -> Path:
    """Check that ``path`` looks like a Hugging Face causal-LM directory; return it."""
    if not path.is_dir():
        raise BaseModelError(f"model directory {path} not found; set model.base_model to an existing directory")
    if not (path / "config.json").is_file():
        raise BaseModelError(f"{path} has no config.json: it is not a Hugging Face model directory")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise BaseModelError(f"{path} has no weights (*.safetensors or *.bin)")
    return path


def describe_model(path: str | Path) -> dict[str, object]:
    """Architecture facts read from ``config.json`` and the safetensors headers (no weights are loaded)."""
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
