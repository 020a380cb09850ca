"""Steps 03 and 04 (notebooks ``03_stage1_dora``, ``04_stage2_qlora``; also 05's single-stage ablation):
supervised fine-tuning stages: load a base, attach the stage's adapter, train, save, resume, merge.

The paper's recipe, as two calls of one API:

* stage 1 - DoRA (r=32, alpha=16) on MMed-IFT (+ the CCTS-filtered translations), then the adapter is merged
  into the base (:func:`merge_adapter`);
* stage 2 - QLoRA (the merged model loaded in 4-bit NF4, LoRA r=16, alpha=8) on MMed-IFT-MC.

On a CUDA GPU, training goes through Unsloth's ``FastLanguageModel`` (fused kernels). On a CPU, or where Unsloth
cannot be imported (or ``MMED_TRAIN_BACKEND=peft``), the same configs run on plain transformers + PEFT
(+ bitsandbytes for 4-bit), and the API says so once; ``MMED_TRAIN_BACKEND=unsloth`` forces Unsloth's own CPU
fallback. Records are chat messages; they
are trained as prompt -> completion, so the loss falls on the assistant's answer only. What one training run
writes into its folder is :class:`~mmed_helpers.core.layout.TrainDir`: checkpoints every ``save_steps`` (a rerun
resumes from the last complete one), the adapter, the log history and a manifest::

    >>> result = train_stage("stage1", cfg.stage1, base_path, [run.require("ift")], run.stage1_train, cfg.model)
    >>> merge_adapter(base_path, result.adapter_dir, run.stage1_merged, dtype="float32")
"""

from __future__ import annotations

import json
import platform
import resource
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.artifacts import atomic_directory, atomic_write_text, file_sha256, model_identity, write_manifest
from ..core.config import METHODS, REPORT_TO, ModelConfig, StageConfig
from ..core.device import resolve_dtype
from ..core.flags import TRAIN_BACKEND, train_backend
from ..core.layout import TrainDir
from ..core.llm import chat_token_ids

_ANNOUNCED = False


class TrainingError(RuntimeError):
    """Training cannot start (missing model or data, empty dataset); the message names the fix."""


# --------------------------------------------------------------------------- backend


def unsloth_enabled() -> bool:
    """True if training goes through Unsloth: asked for (``MMED_TRAIN_BACKEND``: ``unsloth``, or ``auto`` with
    a CUDA GPU) and importable. On a CPU, ``auto`` trains with transformers + PEFT: Unsloth brings no kernels
    there and its fallback measured 4.5x slower per QLoRA step (``benchmarks/train_throughput.py``)."""
    choice = train_backend()
    if choice == "peft":
        return False
    if choice == "auto":
        import torch

        if not torch.cuda.is_available():
            _announce(f"no CUDA GPU: training with transformers + PEFT ({TRAIN_BACKEND}=unsloth forces Unsloth)")
            return False
    try:
        import unsloth  # noqa: F401  (must be imported before transformers, trl, peft)
    except Exception as exc:  # ImportError, or a GPU-stack error on an unsupported machine
        _announce(
            f"Unsloth unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "training with transformers + PEFT instead"
        )
        return False
    return True


def _announce(message: str) -> None:
    global _ANNOUNCED
    if not _ANNOUNCED:
        print(message, flush=True)
        _ANNOUNCED = True


def load_for_training(model_path: str | Path, stage: StageConfig, model_cfg: ModelConfig, seed: int = 42):
    """Load ``model_path`` (4-bit NF4 if the stage says so) and attach the stage's adapter.

    Returns ``(model, tokenizer, backend)`` with ``backend`` ``"unsloth"`` or ``"peft"``."""
    path = Path(model_path).expanduser().resolve()  # absolute: a relative path looks like a hub id
    if not (path / "config.json").is_file():
        raise TrainingError(f"model directory {path} not found (no config.json)")
    if stage.method not in METHODS:
        raise TrainingError(f"stage method must be one of {METHODS}, got {stage.method!r}")
    if stage.method == "qlora" and not stage.load_in_4bit:
        raise TrainingError("method qlora needs load_in_4bit: true")
    dtype = resolve_dtype(model_cfg.dtype)
    # the adapter recipe, identical for both backends
    adapter = dict(
        r=stage.r,
        lora_alpha=stage.lora_alpha,
        lora_dropout=stage.lora_dropout,
        target_modules=list(stage.target_modules),
        use_dora=stage.method == "dora",
        bias="none",
    )
    if unsloth_enabled():
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(
            str(path), max_seq_length=model_cfg.max_seq_length, dtype=dtype, load_in_4bit=stage.load_in_4bit
        )
        keep_4bit_weights_trainable_on_cpu(model)
        model = FastLanguageModel.get_peft_model(
            model,
            **adapter,
            use_gradient_checkpointing="unsloth" if stage.gradient_checkpointing else False,
            random_state=seed,
        )
        return model, tok, "unsloth"

    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": dtype}
    if stage.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=stage.bnb_4bit_quant_type,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    if torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if stage.load_in_4bit:
        keep_4bit_weights_trainable_on_cpu(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=stage.gradient_checkpointing)
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return get_peft_model(model, LoraConfig(**adapter, task_type="CAUSAL_LM")), tok, "peft"


def keep_4bit_weights_trainable_on_cpu(model) -> int:
    """Turn off bitsandbytes' CPU weight repacking in every 4-bit layer of ``model``; returns how many.

    On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit``'s weight in place, into a bf16
    inference layout, at the first forward pass in eval mode without gradients - which is what measuring the
    validation loss before training is. Two things then go wrong (measured on an AMD EPYC with avx512_bf16):
    a layer whose input width is not a multiple of the 64-value quantisation block fails outright (``shape
    '[128, 5]' is invalid for input of size 704`` for the smoke model's 352-wide ``down_proj``), and every later
    training step runs through kernels with no autograd formula, so the adapters' gradients come out wrong (as
    far from the right ones as they are large). Training must keep the plain NF4 layout; it is the same on
    every CPU and on a GPU."""
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


# --------------------------------------------------------------------------- data


_KEEP = ("lang", "id", "origin", "source_id")
"""Record columns :func:`load_sft_dataset` reads besides ``messages`` (language, and what ties a translation to
its source)."""


def load_sft_dataset(paths: Sequence[str | Path]):
    """Concatenate the chat datasets at ``paths`` (empty ones are skipped) as prompt -> completion records.

    Raises :class:`TrainingError` naming the missing folder, or when there is nothing to train on."""
    from datasets import concatenate_datasets, load_from_disk

    parts = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise TrainingError(f"training data {p} not found: run the notebook that writes it first")
        # in memory: mapping a dataset read from disk would leave cache-*.arrow files in the run's data folders
        ds = load_from_disk(str(p), keep_in_memory=True)
        if len(ds):
            parts.append(ds.select_columns([c for c in ("messages", *_KEEP) if c in ds.column_names]))
    if not parts:
        raise TrainingError(f"no training examples in {[str(p) for p in paths]}: refusing to train on an empty dataset")
    ds = concatenate_datasets(parts)

    def split(record):
        msgs = record["messages"]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise TrainingError("every training record must end with an assistant message")
        out = {"prompt": msgs[:-1], "completion": msgs[-1:], "lang": record.get("lang") or ""}
        # a translation belongs with its source: the validation split keeps the two on the same side
        group = record.get("source_id") if record.get("origin") == "translated" else record.get("id")
        return out | {"group": group or ""}

    return ds.map(split, remove_columns=ds.column_names)


def split_validation(dataset, fraction: float, seed: int):
    """``(train, validation)``: ``fraction`` of each language's records (``lang``; at least one where a language
    has two or more and ``fraction > 0``), drawn with ``seed``. The same data and seed give the same split, so a
    resumed or repeated run validates on the same items. Records of a held-out ``group`` (a source item and its
    translations) are left out of training too, so no validation answer is trained on in another language."""
    import random

    if not 0.0 <= fraction < 1.0:
        raise TrainingError(f"validation_fraction must be in [0, 1), got {fraction}")
    by_lang: dict[str, list[int]] = {}
    for i, lang in enumerate(dataset["lang"]):
        by_lang.setdefault(lang, []).append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for lang in sorted(by_lang):
        idx = by_lang[lang]
        k = 0 if fraction == 0 or len(idx) < 2 else max(1, round(fraction * len(idx)))
        held.update(rng.sample(idx, k))
    groups = dataset["group"] if "group" in dataset.column_names else [""] * len(dataset)
    held_groups = {groups[i] for i in held if groups[i]}
    train = [i for i in range(len(dataset)) if i not in held and groups[i] not in held_groups]
    return dataset.select(train), dataset.select(sorted(held))


def tokenize_completions(dataset, tokenizer, max_length: int):
    """prompt -> completion records as ``input_ids`` / ``labels`` with the prompt masked (-100), so the loss
    falls on the completion (the assistant's answer and its end-of-turn token) only. Truncated to
    ``max_length``; records left with no completion token are dropped."""

    def encode(record):
        prompt = chat_token_ids(tokenizer, record["prompt"], add_generation_prompt=True)
        full = chat_token_ids(tokenizer, record["prompt"] + record["completion"])
        if full[: len(prompt)] != prompt:  # a template that rewrites earlier turns: mask by length anyway
            prompt = full[: len(prompt)]
        ids = full[:max_length]
        labels = ([-100] * len(prompt) + full[len(prompt) :])[:max_length]
        return {"input_ids": ids, "labels": labels, "lang": record.get("lang") or ""}

    out = dataset.map(encode, remove_columns=dataset.column_names)
    return out.filter(lambda r: any(x != -100 for x in r["labels"]))


def _pad_id(tokenizer) -> int:
    """The id training pads with: the pad token, else end-of-sequence."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


class CompletionCollator:
    """Right-pads ``input_ids`` (pad token), ``labels`` (-100) and builds the attention mask."""

    def __init__(self, tokenizer):
        self.pad = _pad_id(tokenizer)

    def __call__(self, batch):
        import torch

        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class PackedCollator:
    """Padding-free batching (``packing: true``): the batch's samples are packed, longest first, into the first
    row with room for them. A row holds at most as many tokens as the batch's longest sample, so the batch is
    never wider than the padded one, only shorter (fewer rows): with dense attention (SDPA on a CPU) packing
    cannot cost more than padding, and with a variable-length kernel the rows could be any length. Rows are
    padded to the longest. ``position_ids`` restart at 0 for every sample and for the padding, and no attention
    mask is passed: transformers then builds a block-diagonal causal mask from the position ids
    (``masking_utils.find_packed_sequence_indices``), so no token attends to another sample, and the first label
    of every sample is -100, so no token learns to predict the next sample. The batch also says
    ``use_cache=False``: with a cache, transformers skips that detection and the samples see each other.
    The loss is the same as :class:`CompletionCollator`'s (the same tokens carry it); fewer pad tokens are
    computed."""

    def __init__(self, tokenizer):
        self.pad = _pad_id(tokenizer)

    @staticmethod
    def rows(lengths: Sequence[int]) -> list[list[int]]:
        """The sample indices of each row (first fit, longest first, rows as long as the longest sample)."""
        width = max(lengths)
        rows: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
            for r, free in enumerate(room):
                if lengths[i] <= free:
                    rows[r].append(i)
                    room[r] -= lengths[i]
                    break
            else:
                rows.append([i])
                room.append(width - lengths[i])
        return rows

    def __call__(self, batch):
        import torch

        lengths = [len(b["input_ids"]) for b in batch]
        rows = self.rows(lengths)
        width = max(sum(lengths[i] for i in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                k = lengths[i]
                ids[r, at : at + k] = torch.tensor(batch[i]["input_ids"])
                labels[r, at + 1 : at + k] = torch.tensor(batch[i]["labels"][1:])
                positions[r, at : at + k] = torch.arange(k)
                at += k
            positions[r, at:] = torch.arange(width - at)  # the padding is a sample of its own, with no loss
        return {"input_ids": ids, "labels": labels, "position_ids": positions, "use_cache": False}


def batch_collator(tokenizer, stage: StageConfig):
    """The training collator of a stage: :class:`PackedCollator` if ``stage.packing``, else
    :class:`CompletionCollator`."""
    return PackedCollator(tokenizer) if stage.packing else CompletionCollator(tokenizer)


# --------------------------------------------------------------------------- validation


@dataclass
class ValidationLoss:
    """Mean loss per completion token on the validation split, overall and per language."""

    step: int
    loss: float
    by_language: dict[str, float]
    tokens: int

    def as_log(self) -> dict[str, float]:
        return {"validation_loss": self.loss} | {f"validation_loss_{k}": v for k, v in self.by_language.items()}


def validation_loss(model, features, collator, step: int = 0, batch_size: int = 16) -> ValidationLoss:
    """Token-weighted mean cross-entropy of ``model`` on the completion tokens of ``features``
    (:func:`tokenize_completions` output), batched within each language; the model's mode is restored."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    by_lang: dict[str, list[int]] = {}
    for i, lang in enumerate(features["lang"]):
        by_lang.setdefault(lang, []).append(i)
    try:
        with torch.no_grad():
            for lang, idx in sorted(by_lang.items()):
                for start in range(0, len(idx), batch_size):
                    batch = collator([features[j] for j in idx[start : start + batch_size]])
                    batch = {k: v.to(device) for k, v in batch.items()}
                    n = int((batch["labels"][:, 1:] != -100).sum())
                    loss = model(**batch).loss
                    sums[lang] = sums.get(lang, 0.0) + float(loss) * n
                    counts[lang] = counts.get(lang, 0) + n
    finally:
        model.train(was_training)
    total = sum(counts.values())
    if not total:
        raise TrainingError("the validation split has no completion tokens")
    return ValidationLoss(
        step=step,
        loss=sum(sums.values()) / total,
        by_language={k: sums[k] / counts[k] for k in sorted(sums) if counts[k]},
        tokens=total,
    )


def _ValidationCallback(features, collator, eval_steps: int):  # noqa: N802 - imports transformers lazily
    from transformers import TrainerCallback

    class ValidationCallback(TrainerCallback):
        """Validation loss every ``eval_steps`` optimizer steps and after the last one, logged through the
        trainer (log history, TensorBoard, ...) and kept in ``history``."""

        def __init__(self):
            self.history: list[ValidationLoss] = []
            self.trainer = None

        def _measure(self, state, control, model):
            if self.history and self.history[-1].step == state.global_step:
                return
            v = validation_loss(model, features, collator, step=state.global_step)
            self.history.append(v)
            if self.trainer is not None:
                should_log = control.should_log  # Trainer.log clears it: keep this step's loss log
                self.trainer.log(v.as_log())
                control.should_log = self.trainer.control.should_log = should_log

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if eval_steps > 0 and state.global_step % eval_steps == 0:
                self._measure(state, control, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self._measure(state, control, model)

    return ValidationCallback()


def label_mask(record, tokenizer, max_length: int = 4096) -> list[tuple[str, bool]]:
    """One prompt -> completion record as ``(token text, carries loss)`` pairs, exactly as training sees it."""
    from datasets import Dataset

    row = tokenize_completions(Dataset.from_list([dict(record)]), tokenizer, max_length)[0]
    return [(tokenizer.decode([t]), lab != -100) for t, lab in zip(row["input_ids"], row["labels"], strict=True)]


def mask_problems(dataset, features, tokenizer) -> list[int]:
    """Indices of records whose loss-carrying tokens are not exactly the assistant's answer followed by the
    end-of-turn token (a label mask that leaks the prompt, or cuts the answer). ``features`` is
    :func:`tokenize_completions` of ``dataset`` with nothing truncated."""
    bad = []
    for i, (rec, row) in enumerate(zip(dataset, features, strict=True)):
        target = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
        if tokenizer.decode(target) != rec["completion"][0]["content"].strip() + tokenizer.eos_token:
            bad.append(i)
    return bad


def training_canaries(result: TrainResult, min_drop: float = 0.0) -> list[str]:
    """What says a stage did not learn: no trainable parameters, no optimizer step, or a validation loss that
    did not fall by more than ``min_drop`` (relative). Empty when all is well."""
    problems = []
    if result.trainable_parameters == 0:
        problems.append("no trainable parameters: the adapter is attached to nothing")
    if result.global_step == 0:
        problems.append("no optimizer step was taken")
    drop = result.validation_drop
    if drop is None:
        problems.append("no validation loss was measured (validation_fraction is 0 or the split is empty)")
    elif drop <= min_drop:
        problems.append(
            f"validation loss fell by {drop:.2%} ({result.validation_loss_base:.4f} -> "
            f"{result.validation_loss_final:.4f}), not more than {min_drop:.0%}"
        )
    return problems


# --------------------------------------------------------------------------- checkpoints


def last_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (``trainer_state.json`` written, which the trainer does last)."""
    d = Path(checkpoints_dir)
    if not d.is_dir():
        return None
    found = []
    for c in d.glob("checkpoint-*"):
        try:
            step = int(c.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if (c / "trainer_state.json").is_file():
            found.append((step, c))
    return max(found)[1] if found else None


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    name: str
    out_dir: Path
    adapter_dir: Path
    backend: str
    global_step: int
    final_loss: float | None
    losses: list[tuple[int, float]]
    wall_s: float
    peak_memory_gib: float
    memory_kind: str
    resumed_from: str | None
    examples: int
    trained_tokens: float | None = None
    quantized_layers: int = 0
    """Linear layers held in 4-bit (bitsandbytes ``Linear4bit``): > 0 for QLoRA."""
    trainable_parameters: int = 0
    total_parameters: int = 0
    step_seconds: list[float] = field(default_factory=list)
    """Wall time of each optimizer step of this run (for throughput without the warm-up)."""
    validation_examples: int = 0
    validation_loss_base: float | None = None
    """Validation loss of the starting model (the adapter attached but untrained, so equal to the base)."""
    validation_loss_final: float | None = None
    validation_by_language_base: dict[str, float] = field(default_factory=dict)
    validation_by_language_final: dict[str, float] = field(default_factory=dict)
    validation: list[ValidationLoss] = field(default_factory=list)
    """The validation curve: step 0 (the starting model), every ``eval_steps``, the last step."""
    reused: bool = False
    """True when a rerun found this run finished with the same identity and did not train again."""

    @property
    def validation_drop(self) -> float | None:
        """Relative drop of the validation loss from the starting model, e.g. 0.12 = 12 % lower."""
        if self.validation_loss_base is None or self.validation_loss_final is None:
            return None
        return (self.validation_loss_base - self.validation_loss_final) / self.validation_loss_base

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"], d["adapter_dir"] = str(self.out_dir), str(self.adapter_dir)
        d.pop("losses")
        d.pop("step_seconds")
        d.pop("validation")
        d.pop("reused")  # what this call did, not a fact of the run (a manifest keeps it under this_run)
        d["validation_drop"] = self.validation_drop
        return d

    def validation_curve(self, lang: str | None = None) -> list[tuple[int, float]]:
        """``(step, loss)`` of the validation curve, overall or for one language."""
        if lang is None:
            return [(v.step, v.loss) for v in self.validation]
        return [(v.step, v.by_language[lang]) for v in self.validation if lang in v.by_language]


def train_stage(
    name: str,
    stage: StageConfig,
    model_path: str | Path,
    data_paths: Sequence[str | Path],
    out_dir: str | Path,
    model_cfg: ModelConfig,
    seed: int = 42,
    progress: bool = True,
    profile: str = "",
) -> TrainResult:
    """Train one stage in the training folder ``out_dir`` (a :class:`~mmed_helpers.core.layout.TrainDir`):
    resume from its checkpoints, save the adapter, the log history and ``manifest.json`` (config, data hashes,
    versions, steps, final loss, wall time, peak memory)."""
    folder = TrainDir(Path(out_dir).expanduser().resolve())
    dataset = load_sft_dataset(data_paths)  # fails before loading any model when data is missing or empty
    identity = run_identity(stage, model_cfg, model_path, data_paths, seed)
    finished = finished_run(folder, identity, name)
    if finished is not None:
        print(
            f"{name}: reusing the finished run in {folder.root} (same config, data, base and seed); "
            "delete that folder to train again",
            flush=True,
        )
        return finished
    resume = last_checkpoint(folder.checkpoints)
    if resume is not None:
        _check_resume(folder, identity, name, resume)
    dataset, held_out = split_validation(dataset, stage.validation_fraction, seed)
    if not len(dataset):
        raise TrainingError(f"nothing left to train on after holding out {len(held_out)} validation records")
    model, tok, backend = load_for_training(model_path, stage, model_cfg, seed)
    _announce(f"training backend: {backend}")
    _reset_peak_memory()
    args = _training_args(stage, model_cfg, folder, seed, progress)
    trainer = _make_trainer(backend, model, tok, dataset, args, stage, model_cfg)
    _log_tensorboard_to(trainer, folder.tensorboard)
    facts = _model_facts(model)
    timer = _StepTimer()
    trainer.add_callback(timer)
    val_features = tokenize_completions(held_out, tok, model_cfg.max_seq_length) if len(held_out) else None
    validator = None
    if val_features is not None and len(val_features):
        collator = CompletionCollator(tok)
        # before training: a fresh adapter leaves the model's outputs unchanged, so this is the starting model
        start = validation_loss(model, val_features, collator, step=0)
        validator = _ValidationCallback(val_features, collator, stage.eval_steps)
        validator.history.append(start)
        validator.trainer = trainer
        trainer.add_callback(validator)
    atomic_write_text(folder.started_with, json.dumps(identity, indent=1) + "\n")
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - t0
    history_v = validator.history if validator else []

    with atomic_directory(folder.adapter) as tmp:
        trainer.model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    history = trainer.state.log_history
    losses = [(h["step"], float(h["loss"])) for h in history if "loss" in h]
    peak, memory_kind = _peak_memory()
    result = TrainResult(
        name=name,
        out_dir=folder.root,
        adapter_dir=folder.adapter,
        backend=backend,
        global_step=trainer.state.global_step,
        final_loss=losses[-1][1] if losses else None,
        losses=losses,
        wall_s=wall,
        peak_memory_gib=round(peak, 3),
        memory_kind=memory_kind,
        resumed_from=str(resume) if resume else None,
        examples=len(dataset),
        trained_tokens=next((h.get("num_tokens") for h in reversed(history) if "num_tokens" in h), None),
        step_seconds=timer.seconds,
        validation_examples=len(val_features) if val_features is not None else 0,
        validation_loss_base=history_v[0].loss if history_v else None,
        validation_loss_final=history_v[-1].loss if history_v else None,
        validation_by_language_base=history_v[0].by_language if history_v else {},
        validation_by_language_final=history_v[-1].by_language if history_v else {},
        validation=history_v,
        **facts,
    )
    _write_training_record(result, folder, history, stage, model_cfg, model_path, data_paths, seed, profile, identity)
    return result


def run_identity(stage: StageConfig, model_cfg: ModelConfig, model_path, data_paths, seed: int) -> dict[str, Any]:
    """What a finished training run must match to be reused: the stage and model configs, the base model (path
    and :func:`~mmed_helpers.core.artifacts.model_identity`), the data (paths and SHA-256) and the seed."""
    base = Path(model_path).expanduser().resolve()
    identity = {
        "stage": asdict(stage),
        "model": asdict(model_cfg),
        "base_model": str(base),
        "base_model_identity": model_identity(base),
        "data": {str(Path(p).resolve()): file_sha256(p) for p in data_paths},
        "seed": seed,
    }
    return json.loads(json.dumps(identity))  # as the manifest will hold it


def _portable(identity: dict[str, Any]) -> dict[str, Any]:
    """``identity`` without where the run folder is: the base model by its content only, each dataset by its step
    folder and name (``01_generate_qa/mmed_ift``) and content. A run folder copied or moved elsewhere (another
    disk, a Colab download, the browser test's copy) is still the same run."""
    out = {k: v for k, v in identity.items() if k != "base_model"}
    if isinstance(out.get("data"), dict):
        out["data"] = {"/".join(Path(k).parts[-2:]): v for k, v in out["data"].items()}
    return out


def _changed(previous: dict[str, Any], identity: dict[str, Any]) -> str:
    before, now = _portable(previous), _portable(identity)
    return ", ".join(sorted(k for k in now if before.get(k) != now[k]) or ["recipe"])


def _check_resume(folder: TrainDir, identity: dict[str, Any], name: str, checkpoint: Path) -> None:
    """Refuse to resume ``checkpoint`` when the interrupted run was started with another identity (resuming
    would continue one config's optimiser state and schedule under another). Checkpoints from before the course
    recorded it are resumed as before."""
    if not folder.started_with.is_file():
        return
    previous = json.loads(folder.started_with.read_text(encoding="utf-8"))
    if _portable(previous) != _portable(identity):
        raise TrainingError(
            f"{checkpoint} belongs to an interrupted {name} run started with a different "
            f"{_changed(previous, identity)}: delete {folder.root} to train from the start with this setup, or "
            "restore the setup to resume it"
        )


def finished_run(folder: TrainDir, identity: dict[str, Any], name: str) -> TrainResult | None:
    """The finished run in ``folder`` when its manifest records the same ``identity`` and its adapter is there,
    rebuilt from the manifest and the log history; None when the folder holds no finished run. A finished run
    made with anything different raises :class:`TrainingError` naming what changed (training on top of it would
    mix two configs, and overwriting it silently would lose it)."""
    if not folder.manifest.is_file() or not (folder.adapter / "adapter_config.json").is_file():
        return None
    manifest = json.loads(folder.manifest.read_text(encoding="utf-8"))
    previous = manifest.get("parameters", {}).get("identity")
    if previous is None:
        raise TrainingError(
            f"{folder.root} holds a finished {name} run from before the course recorded what a run was made with: "
            "delete that folder to train again, or use another run directory"
        )
    if _portable(previous) != _portable(identity):
        raise TrainingError(
            f"{folder.root} holds a finished {name} run made with a different {_changed(previous, identity)}: delete "
            "that folder to train again with this setup, or use another run directory"
        )
    out = dict(manifest["outputs"])
    history = json.loads(folder.log_history.read_text(encoding="utf-8")) if folder.log_history.is_file() else []
    validation = [
        ValidationLoss(
            step=h["step"],
            loss=h["validation_loss"],
            by_language={k[len("validation_loss_") :]: v for k, v in h.items() if k.startswith("validation_loss_")},
            tokens=0,
        )
        for h in history
        if "validation_loss" in h
    ]
    start = ValidationLoss(0, out["validation_loss_base"], out["validation_by_language_base"], 0)
    fields = {f for f in TrainResult.__dataclass_fields__} - {"losses", "step_seconds", "validation", "reused"}
    kept = {k: v for k, v in out.items() if k in fields}
    kept.update(out_dir=folder.root, adapter_dir=folder.adapter)  # where the run is now, not where it was made
    return TrainResult(
        **kept,
        losses=[(h["step"], float(h["loss"])) for h in history if "loss" in h],
        validation=[start, *validation] if out.get("validation_loss_base") is not None else validation,
        reused=True,
    )


def _training_args(stage: StageConfig, model_cfg: ModelConfig, folder: TrainDir, seed: int, progress: bool) -> dict:
    """The trainer arguments both backends share (precision and optimizer follow the device)."""
    import torch

    dtype = resolve_dtype(model_cfg.dtype)
    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(folder.checkpoints),
        per_device_train_batch_size=stage.per_device_train_batch_size,
        gradient_accumulation_steps=stage.gradient_accumulation_steps,
        learning_rate=stage.learning_rate,
        num_train_epochs=stage.num_train_epochs,
        max_steps=stage.max_steps,
        warmup_steps=stage.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=stage.weight_decay,
        lr_scheduler_type=stage.lr_scheduler_type,
        logging_steps=stage.logging_steps,
        save_steps=stage.save_steps,
        save_total_limit=2,
        report_to=_report_to(stage.report_to),
        seed=seed,
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        disable_tqdm=not progress,
        optim="adamw_8bit" if on_gpu and stage.load_in_4bit else "adamw_torch",
    )


def _report_to(value: str) -> list[str]:
    """The trainer's ``report_to`` for a stage's ``report_to`` (one of :data:`REPORT_TO`)."""
    if value not in REPORT_TO:
        raise TrainingError(f"report_to must be one of {REPORT_TO}, got {value!r}")
    return [] if value == "none" else [value]


def _log_tensorboard_to(trainer, directory: Path) -> None:
    """Point the trainer's TensorBoard callback (if ``report_to`` has it) at ``directory`` instead of
    transformers' default ``<output_dir>/runs/<date>_<host>`` (transformers 5 has no ``logging_dir``)."""
    for cb in trainer.callback_handler.callbacks:
        if type(cb).__name__ == "TensorBoardCallback":
            cb.logging_dir = str(directory)


def _make_trainer(backend: str, model, tok, dataset, args: dict, stage: StageConfig, model_cfg: ModelConfig):
    """trl's SFTTrainer (as patched by Unsloth) on the Unsloth path; transformers' Trainer on the PEFT path
    (trl 1.15's SFTTrainer needs triton, which CPU-only and macOS torch lack). Both put the loss on the
    completion only."""
    max_length = model_cfg.max_seq_length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if backend == "unsloth":
            from trl import SFTConfig, SFTTrainer

            # padding-free batches (Unsloth's attention keeps the samples apart)
            sft_args = SFTConfig(**args, max_length=max_length, padding_free=stage.packing)
            return SFTTrainer(model=model, processing_class=tok, train_dataset=dataset, args=sft_args)
        from transformers import Trainer, TrainingArguments

        features = tokenize_completions(dataset, tok, max_length)
        hf_args = TrainingArguments(
            **args, gradient_checkpointing=stage.gradient_checkpointing, remove_unused_columns=False
        )
        collator = batch_collator(tok, stage)
        return Trainer(model=model, args=hf_args, train_dataset=features, data_collator=collator)


def _model_facts(model) -> dict[str, int]:
    """How many linear layers are 4-bit, and trainable vs total parameters."""
    quantized = sum(
        type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes") for m in model.modules()
    )
    return {
        "quantized_layers": quantized,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
    }


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory() -> tuple[float, str]:
    """Peak memory in GiB and what was measured: allocated GPU memory, or the process's peak RSS on CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, "gpu_allocated"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss_kib / 2**20 if platform.system() != "Darwin" else rss_kib / 2**30), "cpu_process_rss"


def _write_training_record(
    result: TrainResult,
    folder: TrainDir,
    history: list,
    stage: StageConfig,
    model_cfg: ModelConfig,
    model_path: str | Path,
    data_paths: Sequence[str | Path],
    seed: int,
    profile: str,
    identity: dict[str, Any],
) -> None:
    atomic_write_text(folder.log_history, json.dumps(history, indent=1) + "\n")
    write_manifest(
        folder.root,
        step=result.name,
        profile=profile,
        parameters={
            "stage": asdict(stage),
            "model": asdict(model_cfg),
            "base_model": str(Path(model_path).resolve()),
            "identity": identity,
        },
        seed=seed,
        inputs={f"data_{i}": p for i, p in enumerate(data_paths)},
        outputs=result.summary(),
        timings={"train": result.wall_s},
    )


def _StepTimer():  # noqa: N802 - a factory, so transformers is imported only when training
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Seconds between consecutive optimizer-step ends (the first from the start of training)."""

        def __init__(self):
            self.seconds: list[float] = []
            self._last = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if self._last is not None:
                self.seconds.append(now - self._last)
            self._last = now

    return StepTimer()


# --------------------------------------------------------------------------- merging


def merge_adapter(base_path: str | Path, adapter_dir: str | Path, out_dir: str | Path, dtype: str = "auto") -> Path:
    """Merge a (Do)LoRA adapter into its base with PEFT and save a plain model directory (16-bit on a GPU,
    the model's float32 on CPU) with the tokenizer. The base is loaded unquantised, so a QLoRA adapter is
    merged into full-precision weights. Written through a temporary folder: never half a model. A rerun with the
    same base, adapter and dtype keeps the existing merge (:data:`MERGE_RECORD`)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_path, adapter_dir, out = Path(base_path).resolve(), Path(adapter_dir).resolve(), Path(out_dir).resolve()
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainingError(f"no adapter in {adapter_dir}: train the stage first")
    record = {"base": model_identity(base_path), "adapter": model_identity(adapter_dir), "dtype": dtype}
    marker = out / MERGE_RECORD
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == record:
        return out  # the same base, adapter and dtype were merged here already
    torch_dtype = resolve_dtype(dtype)
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch_dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    with atomic_directory(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(tmp))
        (tmp / MERGE_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return out


MERGE_RECORD = "mmed_merge.json"
"""Written into a merged model directory: the identities of the base and adapter it was merged from, so a
rerun with the same inputs keeps the merge (and its identity) instead of rewriting it."""
