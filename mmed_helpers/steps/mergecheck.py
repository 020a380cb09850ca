"""Checking a merge: the merged model must compute what base + adapter computed, within the memory there is.

:func:`merge_check` compares logits of the merged model with those of base + adapter (PEFT), one model in memory
at a time, and picks the most exact check that fits: the whole model in float32, in its own 16-bit dtype, or
its first k decoder layers in float32. With a ``record`` file it keeps its result for a rerun over the same
files (the same base, adapter, merged model, texts and choice)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..core.artifacts import atomic_write_text, model_identity
from .train import TrainingError


def merge_check(
    base_path: str | Path,
    adapter_dir: str | Path,
    merged_dir: str | Path,
    texts: Sequence[str],
    memory_bytes: int | None = None,
    mode: str = "auto",
    device: str = "cpu",
    record: str | Path | None = None,
) -> dict:
    """Check a merge: the merged model's logits on ``texts`` must match those of base + adapter (loaded with
    PEFT), while base + adapter differ clearly from the plain base. Returns the max and mean absolute
    difference (merged vs base + adapter), the logits' mean magnitude, the share of tokens whose argmax agrees,
    the adapter's own effect (``adapter_effect_max``: base + adapter vs base) and how the check ran:

    * ``mode``: ``full-float32``, ``full-<dtype>`` (the model's own 16-bit dtype), ``layers-float32`` (the first
      ``layers_checked`` decoder layers only) or ``skipped``;
    * ``dtype``, ``layers_checked``, ``layers_total``, ``memory_needed_bytes`` (estimate),
      ``memory_available_bytes``, ``logit_max_magnitude`` (what the tolerance scales with), ``tolerance``,
      ``passed`` and ``reason`` (one line: which check, and why).

    The models are loaded one at a time: the PEFT model gives the base + adapter logits and, with its adapter
    disabled, the plain base's; it is freed before the merged model is loaded. With ``mode="auto"`` the most
    exact check whose estimated need (:func:`_merge_check_memory`) fits in ``memory_bytes`` (``None``: what
    is free now, ``psutil.virtual_memory().available``, or on CUDA ``torch.cuda.mem_get_info()``) runs:

    1. the full model in float32;
    2. the full model in its own 16-bit dtype (config ``dtype``/``torch_dtype``; bfloat16 for a float32
       model), with a tolerance scaled to that dtype's rounding;
    3. the first k decoder layers (with the embeddings, final norm and lm_head) in float32, k as large as fits:
       base + adapter and merged are built with ``num_hidden_layers = k`` from their checkpoints (the weights
       of later layers, the base's, the merged model's and the adapter's, are skipped). The two truncated models
       compute the same function exactly when those k layers were merged right; a defect in a later layer goes
       unseen.
    4. if even one layer does not fit: nothing runs, ``mode`` is ``skipped``, ``passed`` is ``None`` and the
       difference keys are ``None`` (a skipped check does not stop a run; ``reason`` says what it needed).

    A forced ``mode`` (``full-float32``, ``full-bfloat16``, ``full-float16``, ``layers-float32``) runs even
    when the estimate says it does not fit (with a warning); the layers mode still takes the largest k that
    fits, at least 1.

    ``passed``: ``max_abs_diff <= tolerance`` and the adapter's effect is clearly above the check's resolution
    (``adapter_effect_max > max(tolerance, 4 * max_abs_diff)``), else a merge that dropped the adapter would
    look exact. The tolerance is ``max(1e-4, r * max|logit|)`` (:func:`_merge_tolerance`), ``r`` set by the
    coarser of the compute dtype and the merged weights' stored dtype (a bfloat16 merge cannot match in float32
    beyond bfloat16's rounding).

    The check runs on the CPU by default (``device="cuda"`` runs it on the GPU): it is three forward passes over
    a few short texts, so seconds even for billions of parameters, and loading dominates either way; the host
    usually has its memory free after training, while the GPU may still hold the training run's allocations;
    and CPU float32 is plain IEEE arithmetic, so the float32 tolerance means the same on every machine (on
    CUDA the check switches TF32 matmuls off while it runs).

    ``record``: a JSON file that keeps the result with what was checked (the :func:`model_identity` of the base,
    adapter and merged model, the texts and the choice of mode, memory and device). A rerun over the same
    returns the kept result without loading anything, so a course run twice leaves the run's files as they were.
    """
    if record is not None:
        record = Path(record)
        checked = {
            "base": model_identity(base_path),
            "adapter": model_identity(adapter_dir),
            "merged": model_identity(merged_dir),
            "texts": list(texts),
            "mode": mode,
            "memory_bytes": memory_bytes,
            "device": device,
        }
        if record.is_file():
            kept = json.loads(record.read_text(encoding="utf-8"))
            if kept.get("checked") == checked:
                return kept["result"]
        result = merge_check(base_path, adapter_dir, merged_dir, texts, memory_bytes, mode, device)
        atomic_write_text(record, json.dumps({"checked": checked, "result": result}, indent=1) + "\n")
        return result
    import torch
    from transformers import AutoTokenizer

    base_path, adapter_dir, merged_dir = Path(base_path), Path(adapter_dir), Path(merged_dir)
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"merge_check device {device!r}: use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"merge_check device {device!r}: no CUDA GPU is visible; use device='cpu'")
    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    enc = tok(list(texts), return_tensors="pt", padding=True)
    shape = _merge_check_shape(base_path, adapter_dir, merged_dir)
    available = int(memory_bytes) if memory_bytes is not None else _free_memory(device)
    plan = _plan_merge_check(shape, tuple(enc["input_ids"].shape), available, mode)
    where = "on the GPU" if device.startswith("cuda") else "free"
    plan["reason"] = plan["reason"].format(free=f"{available / 1e9:.2f} GB {where}")
    out = {
        "max_abs_diff": None,
        "mean_abs_diff": None,
        "logit_mean_magnitude": None,
        "argmax_agreement": None,
        "adapter_effect_max": None,
        "logit_max_magnitude": None,
        "mode": plan["mode"],
        "dtype": plan["dtype"],
        "layers_checked": plan["layers"],
        "layers_total": shape["layers"],
        "memory_needed_bytes": plan["needed"],
        "memory_available_bytes": available,
        "tolerance": None,
        "passed": None,
        "reason": plan["reason"],
    }
    if plan["mode"] == "skipped":
        return out
    if plan["needed"] > available:
        warnings.warn(f"merge check {plan['mode']} forced: {plan['reason']}", stacklevel=2)
    dtype, k = getattr(torch, plan["dtype"]), plan["layers"]
    enc = {key: value.to(device) for key, value in enc.items()}
    with torch.no_grad(), _exact_float32(device):
        with_adapter = _load_merge_check_model(base_path, dtype, k, shape["layers"], device, adapter_dir)
        a = with_adapter(**enc).logits.float()
        with with_adapter.disable_adapter():
            c = with_adapter(**enc).logits.float()
        del with_adapter
        _release_memory(device)
        merged = _load_merge_check_model(merged_dir, dtype, k, shape["layers"], device)
        b = merged(**enc).logits.float()
        del merged
    mask = enc["attention_mask"].bool()
    diff = (a - b).abs()[mask]
    magnitude = a.abs()[mask]
    tolerance = _merge_tolerance(plan["dtype"], shape["stored_dtype"], float(magnitude.max()))
    out.update(
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        logit_mean_magnitude=float(magnitude.mean()),
        argmax_agreement=float((a.argmax(-1) == b.argmax(-1))[mask].float().mean()),
        adapter_effect_max=float((a - c).abs()[mask].max()),
        logit_max_magnitude=float(magnitude.max()),
        tolerance=tolerance,
    )
    out["passed"] = bool(
        out["max_abs_diff"] <= tolerance and out["adapter_effect_max"] > max(tolerance, 4 * out["max_abs_diff"])
    )
    return out


MERGE_CHECK_ATOL = 1e-4
"""The merge check's absolute tolerance floor on logits (see :data:`MERGE_CHECK_RTOL`)."""

MERGE_CHECK_RTOL = {"float32": 1e-5, "bfloat16": 2**-4, "float16": 2**-7}
"""The merge check's tolerance relative to the largest logit, per dtype (:func:`_merge_tolerance`).

float32: 1e-5, about 170 units of float32 rounding (2**-24). Merged and unmerged weights round differently
and the difference grows through the layers: measured 2e-7 to 6e-6 on 2- to 12-layer tiny models (4 to 10
units of their largest logit), which leaves room for a 30-layer model, while a merge error is of the order of
the adapter's own effect (0.9 to 3.6 on those models; one projection of one layer left unmerged: 0.15). Below
logits of 10 the 1e-4 floor applies (the smoke run asserts max_abs_diff < 1e-4).

bfloat16 / float16: 16 units of their rounding (2**-8, 2**-11) at the largest logit. Measured in bfloat16 on
the tiny models (2 to 12 layers, random and pre-trained): 1.1 to 1.7 units, about one rounding step of the
largest logits; deeper models add rounding error layer by layer, hence the margin. At that resolution a merge
error smaller than a few percent of the largest logit can go unseen."""

_UNIT_ROUNDOFF = {"float64": 2**-53, "float32": 2**-24, "float16": 2**-11, "bfloat16": 2**-8}
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_MERGE_CHECK_MODES = ("auto", "full-float32", "full-bfloat16", "full-float16", "layers-float32")


def _merge_tolerance(dtype: str, stored_dtype: str, logit_max: float) -> float:
    """``max(MERGE_CHECK_ATOL, r * logit_max)``, ``r`` from :data:`MERGE_CHECK_RTOL` for the coarser of the
    compute dtype and the merged weights' stored dtype (an unknown stored dtype counts as bfloat16)."""
    stored = stored_dtype if stored_dtype in _UNIT_ROUNDOFF else "bfloat16"
    coarser = max(dtype, stored, key=_UNIT_ROUNDOFF.__getitem__)
    return max(MERGE_CHECK_ATOL, MERGE_CHECK_RTOL.get(coarser, MERGE_CHECK_RTOL["float32"]) * logit_max)


def _safetensors_layout(model_dir: Path) -> dict | None:
    """Parameters per decoder layer (keys ``...layers.<i>....``) and outside them, the largest tensor, the
    largest one inside a layer, and the layers' stored dtype, from the safetensors headers (no weights read);
    ``None`` without safetensors files."""
    import re
    import struct

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    layout = {"other": 0, "per_layer": {}, "largest": 0, "largest_in_layer": 0, "dtypes": {}}
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            size = 1
            for d in meta["shape"]:
                size *= d
            layout["largest"] = max(layout["largest"], size)
            layer = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
            if layer is None:
                layout["other"] += size
                continue
            i = int(layer[1])
            layout["per_layer"][i] = layout["per_layer"].get(i, 0) + size
            layout["largest_in_layer"] = max(layout["largest_in_layer"], size)
            dtype = _SAFETENSORS_DTYPES.get(meta["dtype"], meta["dtype"])
            layout["dtypes"][dtype] = layout["dtypes"].get(dtype, 0) + size
    return layout


def _merge_check_shape(base_path: Path, adapter_dir: Path, merged_dir: Path) -> dict:
    """What the memory estimate needs, read from config.json and the safetensors headers: parameters outside
    and per decoder layer (from the merged model, else the base; without safetensors, a conservative guess from
    the weight files' size: all counted outside the layers, two bytes per parameter), the adapter's parameter
    count, the largest tensors, vocabulary, widths, heads, layer count, 16-bit dtype and the stored dtype."""
    top = json.loads((merged_dir / "config.json").read_text(encoding="utf-8"))
    cfg = top.get("text_config", top)
    layers = int(cfg.get("num_hidden_layers") or 0)
    layout = _safetensors_layout(merged_dir) or _safetensors_layout(base_path)
    if layout is None:
        size = sum(f.stat().st_size for f in merged_dir.iterdir() if f.suffix in (".bin", ".pt", ".pth"))
        layout = {"other": size // 2, "per_layer": {}, "largest": size // 2, "largest_in_layer": 0, "dtypes": {}}
    adapter = _safetensors_layout(adapter_dir)
    adapter_params = (adapter["other"] + sum(adapter["per_layer"].values())) if adapter else 0
    own = str(cfg.get("dtype") or cfg.get("torch_dtype") or top.get("dtype") or top.get("torch_dtype") or "")
    stored = max(layout["dtypes"], key=layout["dtypes"].get) if layout["dtypes"] else own or "float32"
    return {
        "other": layout["other"],
        "per_layer": [layout["per_layer"].get(i, 0) for i in range(layers)],
        "largest": layout["largest"],
        "largest_in_layer": layout["largest_in_layer"],
        "adapter": adapter_params,
        "vocab": int(cfg.get("vocab_size") or 0),
        "hidden": int(cfg.get("hidden_size") or 0),
        "intermediate": int(cfg.get("intermediate_size") or 0),
        "heads": int(cfg.get("num_attention_heads") or 0),
        "layers": layers,
        "dtype16": own if own in ("bfloat16", "float16") else "bfloat16",
        "stored_dtype": stored,
    }


def _merge_check_memory(shape: dict, bytes_per: int, k: int, batch: tuple[int, int]) -> int:
    """Estimated peak bytes of a merge check with ``k`` decoder layers at ``bytes_per`` bytes per weight, for a
    padded batch of ``B`` texts of ``T`` tokens (``N = B * T``); one model is held at a time::

        1.1 * ( bytes_per * (P_other + P_layer_0 + ... + P_layer_k-1)     the model's weights
              + 3 * 4 * P_adapter                                           the adapter (float32 in PEFT): the
                                                                            saved tensors, the modules', DoRA's norms
              + 4 * (2 * P_largest + 3 * P_largest_in_layer)                two tensors being converted at once
                                                                            while loading (transformers loads with
                                                                            up to 4 threads); DoRA's W + dW, norm
              + 4 * (8 * N * V + 8 * N * (H + I) + 2 * B * heads * T**2) )  float32 logits (three kept, and the
                                                                            differences), hidden states, scores

    The 10 % covers the allocator's slack; the Python process itself is already outside the free memory.
    Measured on a 125M-parameter Llama with an r=32 DoRA adapter (peak anonymous memory above the process's
    before the call): 0.54-0.59 GB in float32 (estimate 0.90 GB), 0.32-0.45 GB in bfloat16 (0.63 GB)."""
    n_texts, length = batch
    n = n_texts * length
    weights = bytes_per * (shape["other"] + sum(shape["per_layer"][:k]))
    adapter = 3 * 4 * shape["adapter"]
    transient = 4 * (2 * shape["largest"] + 3 * shape["largest_in_layer"])
    activations = 4 * (
        8 * n * shape["vocab"]
        + 8 * n * (shape["hidden"] + shape["intermediate"])
        + 2 * n_texts * shape["heads"] * length**2
    )
    return int(1.1 * (weights + adapter + transient + activations))


def _plan_merge_check(shape: dict, batch: tuple[int, int], available: int, mode: str) -> dict:
    """Which check runs (see :func:`merge_check`): mode, dtype, layers, estimated need and the reason (with a
    ``{free}`` placeholder for the free memory)."""
    if mode not in _MERGE_CHECK_MODES:
        raise ValueError(f"merge_check mode {mode!r}: use one of {', '.join(_MERGE_CHECK_MODES)}")
    total, dtype16 = shape["layers"], shape["dtype16"]
    need32 = _merge_check_memory(shape, 4, total, batch)
    need16 = _merge_check_memory(shape, 2, total, batch)
    fits = [k for k in range(1, total + 1) if _merge_check_memory(shape, 4, k, batch) <= available]
    k = max(fits, default=0)
    if mode == "auto":
        if need32 <= available:
            reason = f"full float32 check: one model at a time needs {_gb(need32)}, {{free}}"
            return _merge_plan("full-float32", "float32", total, need32, reason)
        if need16 <= available:
            reason = f"full {dtype16} check: float32 would need {_gb(need32)}, {{free}}; {dtype16} needs {_gb(need16)}"
            return _merge_plan(f"full-{dtype16}", dtype16, total, need16, reason)
        if total and k:
            need = _merge_check_memory(shape, 4, k, batch)
            reason = (
                f"float32 check of the first {k} of {total} layers: needs {_gb(need)}, {{free}}; "
                f"the full model needs {_gb(need16)} even in {dtype16}"
            )
            return _merge_plan("layers-float32", "float32", k, need, reason)
        need = _merge_check_memory(shape, 4, min(1, total), batch)
        reason = f"merge check skipped: even one layer in float32 needs {_gb(need)}, {{free}}"
        return _merge_plan("skipped", None, 0, need, reason)
    if mode == "layers-float32":
        if not total:
            raise TrainingError("merge_check layers-float32: the model's config has no num_hidden_layers")
        k = max(k, 1)
        need = _merge_check_memory(shape, 4, k, batch)
        reason = f"float32 check of the first {k} of {total} layers (mode forced): needs {_gb(need)}, {{free}}"
        return _merge_plan(mode, "float32", k, need, reason)
    dtype = mode.removeprefix("full-")
    need = need32 if dtype == "float32" else need16
    return _merge_plan(mode, dtype, total, need, f"full {dtype} check (mode forced): needs {_gb(need)}, {{free}}")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _merge_plan(mode: str, dtype: str | None, layers: int, needed: int, reason: str) -> dict:
    return {"mode": mode, "dtype": dtype, "layers": layers, "needed": needed, "reason": reason}


def _free_memory(device: str) -> int:
    """Bytes free now: the host's available memory, or the GPU's free memory (after returning PyTorch's cached
    blocks to the driver)."""
    import gc

    if device.startswith("cuda"):
        import torch

        gc.collect()
        torch.cuda.empty_cache()
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def _release_memory(device: str) -> None:
    """Hand a freed model's memory back: collect it, then return the allocator's free pages to the system
    (glibc keeps them otherwise: measured on a 125M-parameter model, the second model's load then took new
    memory on top of most of the first one's), or PyTorch's cached GPU blocks to the driver."""
    import ctypes
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


class _exact_float32:  # noqa: N801 - used as a context manager
    """On CUDA, float32 matmuls at full precision (no TF32) while the check runs; a no-op on the CPU."""

    def __init__(self, device: str):
        self.device, self.previous = device, None

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            self.previous = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc):
        if self.previous is not None:
            import torch

            torch.set_float32_matmul_precision(self.previous)


class _DropLoadReport:
    """A logging filter that drops transformers' LOAD REPORT (its content is checked instead)."""

    def filter(self, record) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def _load_merge_check_model(path: Path, dtype, k: int, total: int, device: str, adapter_dir: Path | None = None):
    """The model in ``path`` with its first ``k`` of ``total`` decoder layers (all when ``k == total``), in
    ``dtype`` on ``device``, in eval mode; with ``adapter_dir``, wrapped in PEFT with that adapter.

    transformers 5.17 reports the checkpoint's weights of layers >= k as UNEXPECTED in a load report it logs as
    a warning, and loads the rest; that report is silenced here and its content checked instead: anything
    missing, mismatched or unexpected other than those layers raises :class:`TrainingError`. PEFT 0.21.2 loads
    an adapter with ``strict=False`` and drops the tensors of modules the truncated model lacks without a word;
    checked here too: the model's adapter tensors must be exactly the saved ones of the first k layers, with
    the saved values."""
    import logging
    import re

    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path))
    if k < total:
        config.num_hidden_layers = k
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:k]  # per-layer attention kinds (Qwen2, Gemma, ...)

    def beyond_k(key: str) -> bool:
        layer = re.search(r"(?:^|\.)layers\.(\d+)\.", key)
        return layer is not None and int(layer[1]) >= k

    # a filter, not a level: raising this logger's level switches on transformers' tensor-parallel plan check,
    # which then warns about every unsharded layer
    report = logging.getLogger("transformers.modeling_utils")
    quiet = _DropLoadReport()
    report.addFilter(quiet)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path),
            config=config,
            dtype=dtype,
            device_map=device if device.startswith("cuda") else None,
            output_loading_info=True,
        )
    finally:
        report.removeFilter(quiet)
    stray = [key for key in info.get("unexpected_keys", ()) if not beyond_k(key)]
    problems = list(info.get("missing_keys", ())) + list(info.get("mismatched_keys", ())) + stray
    if problems or info.get("error_msgs"):
        shown = ", ".join(map(str, problems[:5])) or "; ".join(map(str, info["error_msgs"]))
        raise TrainingError(f"{path} does not match its config ({len(problems)} weights: {shown}); re-save it")
    if adapter_dir is None:
        return model.eval()
    from peft import PeftModel, get_peft_model_state_dict

    model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    weights = adapter_dir / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        loaded = get_peft_model_state_dict(model)
        with safe_open(str(weights), framework="pt") as saved:
            want = {key for key in saved.keys() if not beyond_k(key)}
            wrong = sorted(want ^ set(loaded))
            wrong += [key for key in sorted(want & set(loaded)) if not _same(loaded[key], saved.get_tensor(key))]
        if wrong:
            raise TrainingError(
                f"the adapter in {adapter_dir} did not load into the model's first {k} layers as saved "
                f"({len(wrong)} tensors: {', '.join(wrong[:3])})"
            )
    return model


def _same(loaded, saved) -> bool:
    """The adapter tensor in the model equals the saved one (PEFT may hold it in float32)."""
    return loaded.shape == saved.shape and bool((loaded.detach().cpu().to(saved.dtype) == saved).all())
