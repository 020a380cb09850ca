"""Step 06 (notebook ``06_ablations``): the paper's own next checks, as a declared grid of variants run through
the training and evaluation API of notebooks 03-05.

The seed paper (arXiv 2409.05732) names what it did not test: one stage against two, the LoRA rank of each stage,
the CCTS threshold (0.7 / 0.8 / 0.9: data kept against translation quality) and cross-lingual transfer (English-only
knowledge in stage 1, then questions in other languages). Each of those is a *study*; each study is a list of
:class:`Variant` s (:func:`plan_variants` reads them from the profile's ``ablations`` section). A variant says which
model it is (the base, a stage-1 model, a two-stage model, a single-stage model) and what it trains (each stage as a
:class:`Training`: the profile's stage with overrides, on a data selection). :func:`run_variant` then

* builds the variant's training sets (English only; notebook 02's stored scores re-filtered at another threshold,
  nothing translated again) in its folder (:class:`~mmed_helpers.core.layout.VariantDir`);
* reuses the recipe's own models (notebooks 03-05) wherever a training is the recipe's: same stage settings, same
  training examples, same starting model. Nothing of the recipe is trained again, and a threshold that keeps
  exactly the recipe's translations *is* the recipe;
* trains the rest with :func:`~mmed_helpers.steps.train.train_stage` (merging a stage 1 with
  :func:`~mmed_helpers.steps.train.merge_adapter` where a stage 2 starts from it); a rerun reuses every finished
  training;
* scores it on the same items as every other variant (notebook 05's, or a seeded subset of them): notebook 05's
  stored scores of the same model are reused, the rest go through
  :func:`~mmed_helpers.steps.evaluate.evaluate_or_reuse`.

:func:`versus_reference` compares a variant with its reference (the recipe: two stages, r = 32/16, CCTS 0.8; a
stage-1 model with the recipe's stage 1; a matched-steps variant with the recipe's ranks at the same steps) item by
item, per benchmark and language, with the exact McNemar test, and refuses a pair scored on different items.
:func:`continual_pretraining_comparison` puts the paper's Open Question 1 on paper::

    >>> plan = plan_variants(cfg)                       # doctest: +SKIP
    >>> ctx = prepare(cfg, run)                          # doctest: +SKIP
    >>> outcomes = {v.name: run_variant(v, ctx) for v in plan}  # doctest: +SKIP
    >>> compared = comparisons(outcomes)                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.artifacts import atomic_write_text, read_manifest, write_manifest
from ..core.config import STUDIES, Profile, StageConfig
from ..core.layout import RunLayout, TrainDir, VariantDir
from .benchmarks import EvalItem, load_profile_benchmarks, select_items
from .evaluate import (
    ItemResult,
    compare_models,
    evaluate_or_reuse,
    evaluation_identity,
    load_scores,
    save_scores,
    summarize,
    summarize_overall,
)

RECIPE = "recipe"
"""The name of the recipe's two-stage model (notebooks 03 + 04): the reference of every study."""
MODELS = ("base", "stage1", "two_stage", "single_stage")
"""What a variant is: the base model, a stage-1 model (its adapter on the base), a stage-1 model with a stage-2
adapter on top, or a stage-2 adapter trained straight on the base."""
DATA = ("recipe", "no_translations", "english_only", "ccts")
"""A training's data selection: the recipe's sets, without their translations, only the CCTS source language's
records, or the recipe's sets with the translations kept at another CCTS threshold (``ccts:0.7``, ``ccts:none``)."""
STAGE_DATA = {"stage1": ("ift", "ift_translated"), "stage2": ("mc", "mc_translated")}
"""Each stage's training set and its kept translations (artifact names of the run layout)."""


class AblationError(RuntimeError):
    """A variant cannot be planned, trained or compared as asked; the message names the variant and the fix."""


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Training:
    """One stage a variant trains: the profile's ``stage`` (``stage1`` or ``stage2``) with ``overrides``, on the
    data selection ``data`` (:data:`DATA`)."""

    stage: str
    overrides: tuple[tuple[str, Any], ...] = ()
    data: str = "recipe"

    def config(self, cfg: Profile) -> StageConfig:
        """The stage's settings: the profile's, with the overrides."""
        return dataclasses.replace(getattr(cfg, self.stage), **dict(self.overrides))

    @property
    def threshold(self) -> float | None:
        """The CCTS threshold of a ``ccts:<t>`` selection (``None`` for ``ccts:none``, no filter)."""
        kind, _, value = self.data.partition(":")
        if kind != "ccts":
            raise AblationError(f"data selection {self.data!r} has no CCTS threshold")
        return None if value == "none" else float(value)


@dataclass(frozen=True)
class Variant:
    """One model of the grid: what it is, what it trains, and the variant it is compared with."""

    name: str
    """Its folder in ``06_ablations/variants/`` and its name in every table."""
    studies: tuple[str, ...]
    what: str
    """What it is, in words."""
    model: str
    """One of :data:`MODELS`."""
    stage1: Training | None = None
    """``stage1`` and ``two_stage`` models: their stage-1 training (the recipe's when it equals it)."""
    stage2: Training | None = None
    """``two_stage`` and ``single_stage`` models: their stage-2 training."""
    reference: str | None = None
    """The variant it is compared with (None for the recipe itself)."""
    value: Any = None
    """The value the study varies (rank, threshold, languages), for the plots."""

    def trainings(self) -> list[Training]:
        return [t for t in (self.stage1, self.stage2) if t is not None]


def _alpha(ratio: float, r: int) -> int:
    return max(1, round(ratio * r))


def plan_variants(cfg: Profile) -> list[Variant]:
    """The variants of the studies ``cfg.ablations.studies`` names, in that order, each once (a variant two studies
    share, such as the recipe-rank stage 1 at matched steps, is listed once with both studies).

    * ``stages``: ``base``, ``stage1`` (the recipe's), ``stage2_only`` (the single-stage model of notebook 05),
      ``recipe`` (both stages) and ``stage1_no_translations``;
    * ``rank``: ``stage1_r<r>`` for each stage-1 rank and ``stage2_r<r>`` for each stage-2 rank (on the recipe's
      merged stage 1), alpha = ``alpha_ratio`` x r, all at ``ablations.steps`` (then named ``..._<n>steps``, and
      the recipe's ranks at those steps are variants too);
    * ``ccts``: ``ccts_<t>`` for each threshold (the recipe's threshold is the recipe) and ``ccts_none``;
    * ``transfer``: ``stage1_english_only`` against the recipe-rank stage 1 on all languages, both at
      ``ablations.steps``.

    >>> [v.name for v in plan_variants(load_profile("smoke", {"ablations.studies": ["ccts"]}))]
    ['recipe', 'ccts_0.7', 'ccts_0.9', 'ccts_none']
    """
    a, s1, s2 = cfg.ablations, cfg.stage1, cfg.stage2
    planned: dict[str, Variant] = {}

    def add(v: Variant) -> None:
        if v.name in planned:
            old = planned[v.name]
            v = dataclasses.replace(old, studies=tuple(dict.fromkeys(old.studies + v.studies)))
        planned[v.name] = v

    steps = (("max_steps", a.steps),) if a.steps else ()
    suffix = f"_{a.steps}steps" if a.steps else ""
    at = f", {a.steps} steps" if a.steps else ""

    def recipe(study: str) -> None:
        add(
            Variant(
                RECIPE,
                (study,),
                f"the recipe: stage 1 (r={s1.r}) + stage 2 (r={s2.r}), CCTS {cfg.ccts.threshold}",
                "two_stage",
                Training("stage1"),
                Training("stage2"),
                None,
                "two stages",
            )
        )

    def recipe_stage1(study: str) -> None:
        add(
            Variant(
                "stage1",
                (study,),
                f"the recipe's stage 1 (DoRA r={s1.r}) alone",
                "stage1",
                Training("stage1"),
                reference=RECIPE,
                value="stage 1",
            )
        )

    def stage1_rank(study: str, r: int) -> str:
        name = f"stage1_r{r}{suffix}" if (a.steps or r != s1.r) else "stage1"
        if name == "stage1":
            recipe_stage1(study)
            return name
        over = (("r", r), ("lora_alpha", _alpha(a.alpha_ratio, r)), *steps)
        ref = "stage1" if r == s1.r or not a.steps else f"stage1_r{s1.r}{suffix}"
        if r == s1.r:
            recipe_stage1(study)
        add(
            Variant(
                name,
                (study,),
                f"stage 1 alone, DoRA r={r}, alpha={_alpha(a.alpha_ratio, r)}{at}",
                "stage1",
                Training("stage1", over),
                reference=ref,
                value=r,
            )
        )
        return name

    for study in a.studies:
        recipe(study)
        if study == "stages":
            add(Variant("base", (study,), "the base model, no fine-tuning", "base", reference=RECIPE, value="base"))
            recipe_stage1(study)
            add(
                Variant(
                    "stage2_only",
                    (study,),
                    f"stage 2 (r={s2.r}) on the base, no stage 1 (notebook 05's single stage)",
                    "single_stage",
                    stage2=Training("stage2"),
                    reference=RECIPE,
                    value="stage 2 only",
                )
            )
            add(
                Variant(
                    "stage1_no_translations",
                    (study,),
                    "stage 1 on MMed-IFT without its translations",
                    "stage1",
                    Training("stage1", data="no_translations"),
                    reference="stage1",
                    value="no translations",
                )
            )
        elif study == "rank":
            if a.steps:
                recipe_stage1(study)
            for r in sorted({*a.stage1_ranks, s1.r}):
                stage1_rank(study, r)
            for r in sorted({*a.stage2_ranks, s2.r}):
                if r == s2.r and not a.steps:
                    continue  # the recipe itself
                over = (("r", r), ("lora_alpha", _alpha(a.alpha_ratio, r)), *steps)
                ref = RECIPE if r == s2.r else (f"stage2_r{s2.r}{suffix}" if a.steps else RECIPE)
                add(
                    Variant(
                        f"stage2_r{r}{suffix}",
                        (study,),
                        f"the recipe's stage 1 + stage 2 QLoRA r={r}, alpha={_alpha(a.alpha_ratio, r)}{at}",
                        "two_stage",
                        Training("stage1"),
                        Training("stage2", over),
                        reference=ref,
                        value=r,
                    )
                )
        elif study == "ccts":
            for t in [*sorted(a.thresholds), *([None] if a.no_filter else [])]:
                if t == cfg.ccts.threshold:
                    continue  # the recipe itself
                label = threshold_label(t)
                what = "no CCTS filter (every translation)" if t is None else f"CCTS threshold {t:g}"
                add(
                    Variant(
                        f"ccts_{label}",
                        (study,),
                        f"both stages with the translations kept at {what}",
                        "two_stage",
                        Training("stage1", data=f"ccts:{label}"),
                        Training("stage2", data=f"ccts:{label}"),
                        reference=RECIPE,
                        value=label,
                    )
                )
        elif study == "transfer":
            ref = stage1_rank(study, s1.r)
            add(
                Variant(
                    f"stage1_english_only{suffix}",
                    (study,),
                    f"stage 1 on the {cfg.ccts.source_language!r} records of MMed-IFT only{at}",
                    "stage1",
                    Training("stage1", steps, "english_only"),
                    reference=ref,
                    value=f"{cfg.ccts.source_language} only",
                )
            )
        else:  # pragma: no cover - the profile's validation allows only STUDIES
            raise AblationError(f"unknown study {study!r}; the studies are {list(STUDIES)}")
    return list(planned.values())


def plan_table(plan: Sequence[Variant], cfg: Profile, run: RunLayout | None = None) -> list[dict[str, Any]]:
    """One row per variant: its studies, what it is, what it trains and its reference; with ``run``, the training
    time to expect at most, from the recipe's own stage times in this run (a training that turns out to be the
    recipe's costs nothing)."""
    recipe_time = _recipe_times(run) if run is not None else {}
    rows = []
    for v in plan:
        trains, expected = [], 0.0
        for t in v.trainings():
            c = t.config(cfg)
            if c == getattr(cfg, t.stage) and t.data == "recipe":
                continue  # the recipe's own training
            trains.append(f"{t.stage} r={c.r}/alpha={c.lora_alpha}, {_steps_text(c)}, data: {t.data}")
            wall, steps = recipe_time.get(t.stage, (None, None))
            if wall is not None:
                expected += wall * (c.max_steps / steps if c.max_steps > 0 and steps else 1.0)
        rows.append(
            {
                "variant": v.name,
                "studies": ", ".join(v.studies),
                "what": v.what,
                "trains (unless its data are the recipe's)": "; ".join(trains) or "nothing: the recipe's",
                "expected training s (at most)": round(expected, 1) if recipe_time else None,
                "compared with": v.reference or "-",
            }
        )
    return rows


def _recipe_times(run: RunLayout) -> dict[str, tuple[float, int]]:
    """``stage -> (wall seconds, optimizer steps)`` of the recipe's finished stage trainings in ``run``."""
    out = {}
    for stage in ("stage1", "stage2"):
        folder = run.training(stage)
        if folder.manifest.is_file():
            o = read_manifest(folder.root)["outputs"]
            out[stage] = (float(o["wall_s"]), int(o["global_step"]))
    return out


def _steps_text(c: StageConfig) -> str:
    return f"{c.max_steps} steps" if c.max_steps > 0 else f"{c.num_train_epochs:g} epochs"


# --------------------------------------------------------------------------- what every variant shares


@dataclass
class Context:
    """What every variant of a run is trained and scored with: the profile, the run, the items (the same for every
    variant) and notebook 05's items (whose stored scores are reused)."""

    cfg: Profile
    run: RunLayout
    items: list[EvalItem]
    scored_items: list[EvalItem]
    """Notebook 05's items: ``items`` is these, or a seeded subset (``ablations.max_items_per_benchmark``)."""
    benchmarks: Any = None
    """The benchmark n-gram index a re-filtered translation is checked against (None: unchecked)."""
    _refiltered: dict[Any, Any] = field(default_factory=dict, repr=False)
    _digests: dict[Any, str] = field(default_factory=dict, repr=False)
    _scores: dict[str, list[ItemResult]] = field(default_factory=dict, repr=False)
    """Answers already scored in this run context, by evaluation identity (variants that are the same model)."""

    @property
    def score_settings(self) -> dict[str, Any]:
        ev = self.cfg.evaluation
        return {"dtype": self.cfg.model.dtype, "batch_size": ev.batch_size, "max_new_tokens": ev.max_new_tokens}


def prepare(cfg: Profile, run: RunLayout) -> Context:
    """Load notebook 05's items (its benchmarks, sources and cap, drawn with the profile's seed) and the subset
    the variants are scored on; build the n-gram index re-filtered translations are checked against."""
    from ..core.decontam import BenchmarkIndex, benchmark_texts

    every, failed = load_profile_benchmarks(cfg.evaluation, cfg.languages, cfg.offline)
    if failed:
        raise AblationError(
            f"benchmarks {sorted(failed)} could not be loaded ({next(iter(failed.values()))}); "
            "notebook 05 needs them too: fix the source named there"
        )
    scored = select_items(every, cfg.evaluation.max_items_per_benchmark, cfg.seed)
    items = select_items(scored, cfg.ablations.max_items_per_benchmark, cfg.seed)
    n = cfg.datagen.decontamination_ngram
    index = BenchmarkIndex.build(benchmark_texts(every), n=n) if n else None
    return Context(cfg, run, items, scored, index)


# --------------------------------------------------------------------------- data


def examples_digest(paths: Iterable[str | Path]) -> str:
    """SHA-256 of the training examples in the datasets at ``paths`` (id, language, messages), however they are
    split across datasets and in whatever order: two selections with the same digest train on the same examples."""
    from datasets import load_from_disk

    rows = []
    for p in paths:
        ds = load_from_disk(str(p), keep_in_memory=True)
        rows += [json.dumps([r["id"], r["lang"], r["messages"]], ensure_ascii=False, sort_keys=True) for r in ds]
    return hashlib.sha256("\n".join(sorted(rows)).encode("utf-8")).hexdigest()


def _save_if_changed(records: list[dict[str, Any]], kind: str, path: Path, float_columns: Sequence[str] = ()) -> Path:
    """Save ``records`` as a dataset at ``path`` unless it already holds exactly them (a rerun rewrites nothing)."""
    from ..core.records import records_dataset, save_dataset

    dataset = records_dataset(records, kind, float_columns)
    if (path / "dataset_info.json").is_file():
        from datasets import load_from_disk

        if load_from_disk(str(path), keep_in_memory=True).to_list() == dataset.to_list():
            return path
    return save_dataset(dataset, path)


def refiltered(ctx: Context, threshold: float | None):
    """Notebook 02's kept translations at ``threshold`` (``None``: no filter), computed once per run context
    (:func:`~mmed_helpers.steps.translate.refilter`)."""
    from .translate import refilter

    if threshold not in ctx._refiltered:
        ctx._refiltered[threshold] = refilter(ctx.run, threshold, ctx.benchmarks)
    return ctx._refiltered[threshold]


def training_data(training: Training, ctx: Context, vdir: VariantDir) -> list[Path]:
    """The datasets ``training`` learns from: the run's own, or the variant's versions of them (written into its
    folder), in the order the recipe lists them."""
    from ..core.records import load_items

    run = ctx.run
    main, translated = (run.require(name) for name in STAGE_DATA[training.stage])
    kind = training.data.partition(":")[0]
    if kind == "recipe":
        return [main, translated]
    if kind == "no_translations":
        return [main]
    if kind == "english_only":
        lang = ctx.cfg.ccts.source_language
        label = STAGE_DATA[training.stage][0]
        chosen = [it for it in load_items(main, label) if it.lang == lang]
        if not chosen:
            raise AblationError(f"{main} holds no {lang!r} record: nothing to train an English-only stage on")
        path = vdir.dataset(main)
        _save_if_changed([it.to_record() for it in chosen], label, path)
        return [path]
    if kind == "ccts":
        from .translate import SCORE_COLUMNS

        label = STAGE_DATA[training.stage][0]
        path = vdir.dataset(translated)
        _save_if_changed(refiltered(ctx, training.threshold).records(label), label, path, SCORE_COLUMNS)
        return [main, path]
    raise AblationError(f"unknown data selection {training.data!r}; choose from {list(DATA)}")


def _digest(ctx: Context, paths: Sequence[Path]) -> str:
    key = tuple(str(p) for p in paths)
    if key not in ctx._digests:
        ctx._digests[key] = examples_digest(paths)
    return ctx._digests[key]


def data_facts(paths: Sequence[Path]) -> dict[str, Any]:
    """Training records per language, and how many are translations, in the datasets at ``paths``."""
    from datasets import load_from_disk

    by_lang: dict[str, int] = {}
    translated = 0
    for p in paths:
        ds = load_from_disk(str(p), keep_in_memory=True)
        for lang, origin in zip(ds["lang"], ds["origin"], strict=True):
            by_lang[lang] = by_lang.get(lang, 0) + 1
            translated += origin == "translated"
    return {"records": sum(by_lang.values()), "translations": translated, "by_language": dict(sorted(by_lang.items()))}


# --------------------------------------------------------------------------- one variant


COST_FIELDS = (
    "global_step",
    "examples",
    "trainable_parameters",
    "total_parameters",
    "wall_s",
    "peak_memory_gib",
    "memory_kind",
    "backend",
    "trained_tokens",
    "final_loss",
    "validation_loss_base",
    "validation_loss_final",
)
"""What a variant's record keeps of each training (``TrainResult.summary()``)."""


@dataclass
class Outcome:
    """What :func:`run_variant` did for one variant: its scored answers (named after the variant), and for each
    stage the training's facts and where it came from."""

    variant: Variant
    results: list[ItemResult]
    trainings: dict[str, dict[str, Any]]
    """Stage -> cost facts (:data:`COST_FIELDS`) and ``from``: the recipe notebook it reuses, or the variant."""
    data: dict[str, dict[str, Any]]
    """Stage -> records per language of its training sets (and, for CCTS variants, the kept translations)."""
    trained_now: list[str] = field(default_factory=list)
    scored: str = ""
    """Where its scores come from: ``scored now``, ``kept from an earlier run``, ``notebook 05``."""

    @property
    def reuses(self) -> list[str]:
        return [f"{stage}: {t['from']}" for stage, t in self.trainings.items() if t["from"] != "this variant"]

    def cost(self) -> dict[str, Any]:
        """Trainable parameters and wall time summed over its trainings, the highest peak memory."""
        t = list(self.trainings.values())
        return {
            "trainable_parameters": sum(x.get("trainable_parameters") or 0 for x in t),
            "wall_s": round(sum(x.get("wall_s") or 0.0 for x in t), 3),
            "peak_memory_gib": max((x.get("peak_memory_gib") or 0.0 for x in t), default=0.0),
            "memory_kind": next((x["memory_kind"] for x in t if x.get("memory_kind")), None),
            "steps": {stage: x.get("global_step") for stage, x in self.trainings.items()},
        }


_RECIPE_TRAINING = {
    ("stage1", "base"): ("stage1_train", "notebook 03 (the recipe's stage 1)"),
    ("stage2", "stage1"): ("stage2_train", "notebook 04 (the recipe's stage 2)"),
    ("stage2", "base"): ("single_stage_train", "notebook 05 (the single-stage model)"),
}


def _facts(summary: dict[str, Any], origin: str) -> dict[str, Any]:
    return {**{k: summary.get(k) for k in COST_FIELDS}, "from": origin}


def _train(
    training: Training,
    start: str,
    start_dir: Path,
    start_is_recipe: bool,
    folder: TrainDir,
    ctx: Context,
    vdir: VariantDir,
    progress: bool,
) -> tuple[Path, dict[str, Any], dict[str, Any], bool]:
    """``(adapter, facts, data facts, trained now)`` of one training: the recipe's own when the settings, the
    examples and the start are the recipe's, else trained (or a finished run reused) in ``folder``."""
    from .train import train_stage

    cfg, run = ctx.cfg, ctx.run
    paths = training_data(training, ctx, vdir)
    facts = data_facts(paths)
    if training.data.startswith("ccts"):
        kept = refiltered(ctx, training.threshold)
        facts["kept_translations"] = kept.counts().get(STAGE_DATA[training.stage][0], {})
    stage_cfg = training.config(cfg)
    recipe_paths = run.training_data("stage1" if training.stage == "stage1" else "stage2")
    same = (
        start_is_recipe
        and stage_cfg == getattr(cfg, training.stage)
        and _digest(ctx, paths) == _digest(ctx, recipe_paths)
    )
    if same:
        artifact, origin = _RECIPE_TRAINING[(training.stage, start)]
        recipe_dir = TrainDir(getattr(run, artifact))
        if (recipe_dir.adapter / "adapter_config.json").is_file():
            return recipe_dir.adapter, _facts(read_manifest(recipe_dir.root)["outputs"], origin), facts, False
        if artifact != "single_stage_train":
            run.require(artifact.replace("_train", "_adapter"))  # names the notebook to run
        # notebook 05 did not train the single-stage model (evaluation.train_single_stage: false): train it here
    result = train_stage(
        f"{vdir.root.name}/{training.stage}",
        stage_cfg,
        start_dir,
        paths,
        folder.root,
        cfg.model,
        seed=cfg.seed,
        progress=progress,
        profile=cfg.name,
    )
    return result.adapter_dir, _facts(result.summary(), "this variant"), facts, not result.reused


@contextlib.contextmanager
def quiet():
    """Keep the trainer's line per logged step and the libraries' progress bars out of the output (a notebook that
    trains a dozen variants would show thousands of lines); each training's TensorBoard log keeps its curve."""
    import datasets
    from transformers.utils import logging as hf_logging

    bars = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            hf_logging.enable_progress_bar()


def run_variant(v: Variant, ctx: Context, progress: bool = True) -> Outcome:
    """Train what ``v`` trains (reusing the recipe's models and any finished run), score it on ``ctx.items`` and
    write its manifest into its folder. Returns its :class:`Outcome`. Without ``progress`` it prints nothing
    (:func:`quiet`)."""
    with contextlib.nullcontext() if progress else quiet():
        return _run_variant(v, ctx, progress)


def _run_variant(v: Variant, ctx: Context, progress: bool) -> Outcome:
    from .train import merge_adapter

    cfg, run = ctx.cfg, ctx.run
    vdir = run.variant(v.name)
    base = Path(run.base_model().path)
    trainings: dict[str, dict] = {}
    data: dict[str, dict] = {}
    now: list[str] = []
    adapter: Path | None = None
    model_dir = base
    if v.model not in MODELS:
        raise AblationError(f"variant {v.name!r}: unknown model {v.model!r}; choose from {list(MODELS)}")
    if v.model in ("stage1", "two_stage"):
        a1, trainings["stage1"], data["stage1"], fresh = _train(
            v.stage1, "base", base, True, vdir.stage1, ctx, vdir, progress
        )
        now += ["stage1"] * fresh
        recipe_stage1 = trainings["stage1"]["from"] != "this variant"
        if v.model == "stage1":
            # the recipe's stage 1 is scored as notebook 05 scored it (merged); a variant's as base + its adapter
            model_dir, adapter = (run.require("stage1_merged"), None) if recipe_stage1 else (base, a1)
        else:
            model_dir = (
                run.require("stage1_merged")
                if recipe_stage1
                else merge_adapter(base, a1, vdir.stage1_merged, dtype=cfg.model.dtype)
            )
            adapter, trainings["stage2"], data["stage2"], fresh = _train(
                v.stage2, "stage1", model_dir, recipe_stage1, vdir.stage2, ctx, vdir, progress
            )
            now += ["stage2"] * fresh
    elif v.model == "single_stage":
        adapter, trainings["stage2"], data["stage2"], fresh = _train(
            v.stage2, "base", base, True, vdir.stage2, ctx, vdir, progress
        )
        now += ["stage2"] * fresh
    results, scored = score_variant(v.name, model_dir, adapter, ctx, vdir, progress)
    outcome = Outcome(v, results, trainings, data, now, scored)
    write_manifest(
        vdir.root,
        step=v.name,
        profile=cfg.name,
        parameters={"variant": dataclasses.asdict(v), "ablations": dataclasses.asdict(cfg.ablations)},
        seed=cfg.seed,
        inputs={"model": model_dir, **({"adapter": adapter} if adapter else {})},
        outputs={
            "trainings": trainings,
            "data": data,
            "cost": outcome.cost(),
            "scores": str(vdir.scores),
            "answers": len(results),
        },
        this_run={"trained_now": now, "scored": scored},
    )
    return outcome


# --------------------------------------------------------------------------- scores


def _protocol_of(result_protocol: str) -> str:
    """The profile protocol a result row belongs to (``loglik_norm`` is scored with ``loglik``)."""
    return result_protocol.split("_", 1)[0]


def scores_from_notebook05(model_dir: Path, adapter: Path | None, ctx: Context) -> list[ItemResult] | None:
    """This model's answers to ``ctx.items`` under ``ablations.protocols`` from notebook 05's stored scores, when
    05 scored the same weights and adapter on its items with these protocols among its own and the same settings;
    None otherwise."""
    protocols = set(ctx.cfg.ablations.protocols)
    wanted = {(it.benchmark, it.lang, it.id) for it in ctx.items}
    for store in sorted(ctx.run.eval_by_model.glob("*.json")) if ctx.run.eval_by_model.is_dir() else []:
        saved = load_scores(store)
        if saved is None or not protocols <= set(saved[0].get("protocols", [])):
            continue
        expected = evaluation_identity(
            model_dir, adapter, ctx.scored_items, saved[0]["protocols"], **ctx.score_settings
        )
        if saved[0] != expected:
            continue
        return [
            r for r in saved[1] if _protocol_of(r.protocol) in protocols and (r.benchmark, r.lang, r.item_id) in wanted
        ]
    return None


def score_variant(
    name: str, model_dir: Path, adapter: Path | None, ctx: Context, vdir: VariantDir, progress: bool = True
) -> tuple[list[ItemResult], str]:
    """``(answers named after the variant, where they come from)``: kept from an earlier run of this variant,
    taken from notebook 05's scores of the same model, or scored now (:func:`evaluate_or_reuse`)."""
    protocols = ctx.cfg.ablations.protocols
    identity = evaluation_identity(model_dir, adapter, ctx.items, protocols, **ctx.score_settings)
    key = json.dumps(identity, sort_keys=True)
    saved = load_scores(vdir.scores)
    if saved is not None and saved[0] == identity:
        results, how = saved[1], "kept from an earlier run"
    else:
        results, how = ctx._scores.get(key), "another variant (the same model)"
        if results is None:
            results, how = scores_from_notebook05(model_dir, adapter, ctx), "notebook 05 (the same model, scored there)"
        if results is not None:
            save_scores(vdir.scores, identity, results)
        else:
            results, _ = evaluate_or_reuse(
                name, model_dir, adapter, ctx.items, protocols, vdir.scores, progress=progress, **ctx.score_settings
            )
            how = "scored now"
    ctx._scores[key] = results
    return [dataclasses.replace(r, model=name) for r in results], how


# --------------------------------------------------------------------------- comparisons


ALL = "all"


def with_pooled_benchmarks(results: Iterable[ItemResult]) -> list[ItemResult]:
    """``results`` plus a copy of each under benchmark ``all`` (item ids prefixed with their benchmark), so
    summaries and tests have rows for all benchmarks together."""
    results = list(results)
    pooled = [dataclasses.replace(r, benchmark=ALL, item_id=f"{r.benchmark}:{r.item_id}") for r in results]
    return results + pooled


def accuracy_rows(results: Sequence[ItemResult]) -> list[dict[str, Any]]:
    """Accuracy with its 95 % Wilson interval per benchmark (and ``all``), language (and ``all``) and protocol."""
    both = with_pooled_benchmarks(results)
    keep = ("benchmark", "lang", "protocol", "n", "correct", "accuracy", "ci_low", "ci_high")
    rows = summarize(both) + summarize_overall(both)
    seen, out = set(), []
    for r in rows:
        key = (r["benchmark"], r["lang"], r["protocol"])
        if key not in seen:
            seen.add(key)
            out.append({k: r[k] for k in keep})
    return sorted(
        out, key=lambda r: (r["benchmark"] != ALL, r["benchmark"], r["lang"] != ALL, r["lang"], r["protocol"])
    )


def versus_reference(
    name: str, results: Sequence[ItemResult], reference: str, reference_results: Sequence[ItemResult]
) -> list[dict[str, Any]]:
    """Variant ``name`` against ``reference``, item by item, per benchmark (and ``all``), language (and ``all``)
    and protocol: both accuracies, the items only one of them gets right and the exact McNemar p-value. Raises
    :class:`AblationError` unless both answered exactly the same items under the same protocols: a paired test on
    different items would compare the items, not the models."""
    mine = {(r.benchmark, r.lang, r.protocol, r.item_id) for r in results}
    theirs = {(r.benchmark, r.lang, r.protocol, r.item_id) for r in reference_results}
    if mine != theirs:
        example = sorted(mine ^ theirs)[0]
        raise AblationError(
            f"variant {name!r} was scored on {len(mine)} answers and its reference {reference!r} on {len(theirs)}, "
            f"{len(mine ^ theirs)} of them not shared (e.g. {example}): a paired comparison needs the same items; "
            "delete the variant's scores.json to score it again on the run's items"
        )
    rows = compare_models(
        with_pooled_benchmarks([dataclasses.replace(r, model=name) for r in results])
        + with_pooled_benchmarks([dataclasses.replace(r, model=reference) for r in reference_results]),
        [name, reference],
    )
    return [
        {
            "benchmark": r["benchmark"],
            "lang": r["lang"],
            "protocol": r["protocol"],
            "reference": reference,
            "n": r["n"],
            "accuracy": r["accuracy_a"],
            "reference_accuracy": r["accuracy_b"],
            "difference": r["accuracy_a"] - r["accuracy_b"],
            "only_variant": r["only_a"],
            "only_reference": r["only_b"],
            "p_value": r["p_value"],
        }
        for r in sorted(rows, key=lambda r: (r["benchmark"] != ALL, r["benchmark"], r["lang"] != ALL, r["lang"]))
    ]


def comparisons(outcomes: dict[str, Outcome], against: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every variant with a reference against it (:func:`versus_reference`); with ``against`` (e.g.
    :data:`RECIPE`), every other variant against that one instead, whatever its own reference."""
    out = {}
    for name, o in outcomes.items():
        ref = o.variant.reference if against is None else against
        if ref is None or ref == name:
            continue
        if ref not in outcomes:
            raise AblationError(f"variant {name!r} is compared with {ref!r}, which was not run: run the whole plan")
        out[name] = versus_reference(name, o.results, ref, outcomes[ref].results)
    return out


def main_protocol(protocols: Sequence[str]) -> str:
    """The protocol tables and plots show: ``loglik`` when it ran (every model answers every single-answer item)."""
    return "loglik" if "loglik" in protocols else protocols[0]


def _pick(rows: Sequence[dict], benchmark: str = ALL, lang: str = ALL, protocol: str = "loglik") -> dict | None:
    return next((r for r in rows if (r["benchmark"], r["lang"], r["protocol"]) == (benchmark, lang, protocol)), None)


def results_table(
    outcomes: dict[str, Outcome],
    compared: dict[str, list[dict]],
    protocol: str,
    versus_recipe: dict[str, list[dict]] | None = None,
) -> list[dict]:
    """One row per variant, all benchmarks and languages pooled under ``protocol``: accuracy with its interval,
    the difference from its reference with the McNemar p-value (``compared``: :func:`comparisons`), the same
    against the recipe where the reference is another variant (``versus_recipe``: ``comparisons(outcomes,
    against=RECIPE)``), and its cost."""
    recipe = versus_recipe or {}
    rows = []
    for name, o in outcomes.items():
        acc = _pick(accuracy_rows(o.results), protocol=protocol) or {}
        test = _pick(compared.get(name, []), protocol=protocol) or {}
        own = o.variant.reference in (None, RECIPE)
        vs_recipe = {} if own else _pick(recipe.get(name, []), protocol=protocol) or {}
        cost = o.cost()
        rows.append(
            {
                "variant": name,
                "studies": ", ".join(o.variant.studies),
                "accuracy": acc.get("accuracy"),
                "95% CI": f"{acc['ci_low']:.2f}-{acc['ci_high']:.2f}" if acc else "",
                "n": acc.get("n"),
                "compared with": o.variant.reference or "-",
                "difference": test.get("difference"),
                "p (McNemar)": test.get("p_value"),
                "difference from recipe": vs_recipe.get("difference"),
                "p vs recipe": vs_recipe.get("p_value"),
                "trainable parameters": cost["trainable_parameters"],
                "training wall s": cost["wall_s"],
                "peak memory GiB": cost["peak_memory_gib"],
                "reuses": "; ".join(o.reuses) or "-",
            }
        )
    return rows


def rank_points(outcomes: dict[str, Outcome], cfg: Profile, protocol: str) -> list[dict[str, Any]]:
    """For the rank plot: each variant of the ``rank`` study at the study's steps, with the stage whose rank it
    varies, that rank, its accuracy (all benchmarks and languages pooled) and its trainable parameters."""
    rows = []
    for name, o in outcomes.items():
        v = o.variant
        if "rank" not in v.studies:
            continue
        stage = "stage1" if v.model == "stage1" else "stage2"
        training = v.stage1 if stage == "stage1" else v.stage2
        c = training.config(cfg)
        if cfg.ablations.steps and c.max_steps != cfg.ablations.steps:
            continue  # the recipe at its own steps: a reference of the matched-steps reference, not a rank point
        acc = _pick(accuracy_rows(o.results), protocol=protocol)
        if acc:
            rows.append(
                {
                    "variant": name,
                    "stage": stage,
                    "r": c.r,
                    "lora_alpha": c.lora_alpha,
                    **acc,
                    "trainable_parameters": o.trainings[stage]["trainable_parameters"],
                }
            )
    return sorted(rows, key=lambda r: (r["stage"], r["r"]))


def threshold_points(outcomes: dict[str, Outcome], cfg: Profile, protocol: str) -> list[dict[str, Any]]:
    """For the threshold plot: the recipe and each ``ccts`` variant, with its threshold (``none``: no filter), its
    accuracy (all benchmarks and languages pooled) and the translations each stage trained on."""
    rows = []
    for name, o in outcomes.items():
        v = o.variant
        if "ccts" not in v.studies:
            continue
        label = threshold_label(cfg.ccts.threshold) if name == RECIPE else str(v.value)
        acc = _pick(accuracy_rows(o.results), protocol=protocol)
        if acc:
            kept = {stage: d["translations"] for stage, d in o.data.items()}
            rows.append(
                {
                    "variant": name,
                    "threshold": label,
                    **acc,
                    "kept_stage1": kept.get("stage1", 0),
                    "kept_stage2": kept.get("stage2", 0),
                }
            )
    return sorted(rows, key=lambda r: (r["threshold"] == "none", r["threshold"]))


def language_rows(
    outcomes: dict[str, Outcome], names: Sequence[str], protocol: str, benchmark: str = "mmedbench"
) -> list[dict[str, Any]]:
    """For a per-language plot (``plots.plot_accuracy``): accuracy per language of each variant in ``names`` on
    ``benchmark`` (all benchmarks pooled per language when the run has no such benchmark)."""
    rows = []
    for name in names:
        acc = accuracy_rows(outcomes[name].results)
        chosen = benchmark if any(r["benchmark"] == benchmark for r in acc) else ALL
        rows += [
            {"model": name, **r}
            for r in acc
            if r["benchmark"] == chosen and r["lang"] != ALL and r["protocol"] == protocol
        ]
    return rows


def threshold_label(threshold: float | None) -> str:
    return "none" if threshold is None else f"{threshold:g}"


def kept_counts(ctx: Context, thresholds: Iterable[float | None]) -> list[dict[str, Any]]:
    """Per threshold (``None``: no filter), dataset kind and target language: the round trips notebook 02 scored
    and the translations each threshold keeps (:func:`~mmed_helpers.steps.translate.refilter`)."""
    from ..core.jsonl import read_jsonl

    pairs: dict[tuple[str, str], int] = {}
    for line in read_jsonl(ctx.run.require("ccts_scores")):
        if not line.error:
            key = (line.record["kind"], line.record["target_lang"])
            pairs[key] = pairs.get(key, 0) + 1
    out = []
    for t in thresholds:
        counts = refiltered(ctx, t).counts()
        for (kind, lang), n in sorted(pairs.items()):
            kept = counts.get(kind, {}).get(lang, 0)
            out.append({"threshold": threshold_label(t), "kind": kind, "lang": lang, "round trips": n, "kept": kept})
    return out


# --------------------------------------------------------------------------- results.json


def write_results(
    path: Path,
    cfg: Profile,
    ctx: Context,
    outcomes: dict[str, Outcome],
    compared: dict[str, list[dict]],
    versus_recipe: dict[str, list[dict]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """``results.json``: the items and protocols, and per variant what it is, its data, its trainings and cost,
    its accuracy per benchmark and language, its paired test against its reference (``versus_reference``: the
    matched one, e.g. the recipe's ranks at the same steps: ``compared``) and against the recipe itself
    (``versus_recipe``: ``comparisons(outcomes, against=RECIPE)``; empty for the recipe). Only facts of the
    artifacts (no time of this invocation), so a rerun that reproduced them writes the same bytes."""
    versus_recipe = versus_recipe or {}
    content = json.dumps([dataclasses.asdict(it) for it in ctx.items], ensure_ascii=False, sort_keys=True)
    data = {
        "profile": cfg.name,
        "recipe": {
            "stage1": {"method": cfg.stage1.method, "r": cfg.stage1.r, "lora_alpha": cfg.stage1.lora_alpha},
            "stage2": {"method": cfg.stage2.method, "r": cfg.stage2.r, "lora_alpha": cfg.stage2.lora_alpha},
            "ccts_threshold": cfg.ccts.threshold,
        },
        "ablations": dataclasses.asdict(cfg.ablations),
        "items": {
            "n": len(ctx.items),
            "sha256": hashlib.sha256(content.encode("utf-8")).hexdigest(),
            "protocols": list(cfg.ablations.protocols),
        },
        "variants": [
            {
                "name": name,
                "studies": list(o.variant.studies),
                "what": o.variant.what,
                "model": o.variant.model,
                "value": o.variant.value,
                "reference": o.variant.reference,
                "trainings": o.trainings,
                "reuses": o.reuses,
                "data": o.data,
                **{k: v for k, v in o.cost().items() if k != "steps"},
                "accuracy": accuracy_rows(o.results),
                "versus_reference": compared.get(name, []),
                "versus_recipe": versus_recipe.get(name, []),
            }
            for name, o in outcomes.items()
        ],
        **(extra or {}),
    }
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1, default=str) + "\n")


# --------------------------------------------------------------------------- Open Question 1


FULL_TRAINING_COST = 1.5
"""Assumed compute per token of full-parameter training over adapter training of a frozen model of the same size:
about 6N against 4N FLOPs per token for N parameters (forward 2N; gradients with respect to the activations 2N and
with respect to the weights 2N, which a frozen model skips). An assumption, not a measurement: adapter layers add a
little, and memory, not FLOPs, often limits real throughput."""
MMEDC_TOKENS = 25.5e9
"""MMedC (Qiu et al. 2024, the corpus MMed-Llama 3 was continually pre-trained on): about 25.5 billion tokens in the
course's six languages."""
PAPER_SAMPLES = 200_000
"""MMed-IFT and MMed-IFT-MC together: "over 200k" samples (arXiv 2409.05732, abstract)."""


@dataclass(frozen=True)
class Throughput:
    """What one training processed: ``tokens`` in ``seconds`` of device time."""

    name: str
    tokens: float
    seconds: float
    note: str = ""
    """How the figures were obtained (measured, estimated, assumed)."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def continual_pretraining_comparison(
    stages: Sequence[Throughput], corpus_tokens: float = MMEDC_TOKENS, full_training_cost: float = FULL_TRAINING_COST
) -> dict[str, Any]:
    """The paper's Open Question 1 on paper: the two stages' tokens and device hours against continual
    pre-training of the same model on ``corpus_tokens``, at the first stage's throughput (the 16-bit model, as
    pre-training would hold it) divided by ``full_training_cost`` (full-parameter training also computes the
    weights' gradients).

    >>> r = continual_pretraining_comparison([Throughput("stage 1", 1e6, 100), Throughput("stage 2", 1e6, 200)],
    ...                                      corpus_tokens=1e9, full_training_cost=2.0)
    >>> r["continual_pretraining"]["hours"], r["hours_ratio"]
    (55.55555555555556, 666.6666666666666)
    """
    if not stages:
        raise AblationError("no stage to compare: give at least stage 1's tokens and seconds")
    if any(s.seconds <= 0 or s.tokens <= 0 for s in stages):
        raise AblationError("every stage needs tokens > 0 and seconds > 0")
    two_tokens = sum(s.tokens for s in stages)
    two_seconds = sum(s.seconds for s in stages)
    rate = stages[0].tokens_per_second / full_training_cost
    cpt_seconds = corpus_tokens / rate
    return {
        "stages": [
            {
                "name": s.name,
                "tokens": s.tokens,
                "tokens_per_second": s.tokens_per_second,
                "hours": s.hours,
                "note": s.note,
            }
            for s in stages
        ],
        "two_stages": {"tokens": two_tokens, "hours": two_seconds / 3600},
        "continual_pretraining": {
            "tokens": corpus_tokens,
            "tokens_per_second": rate,
            "hours": cpt_seconds / 3600,
            "full_training_cost": full_training_cost,
        },
        "tokens_ratio": corpus_tokens / two_tokens,
        "hours_ratio": cpt_seconds / two_seconds,
    }


def compute_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A :func:`continual_pretraining_comparison` as table rows: each stage, both stages, continual pre-training."""
    rows = [
        {
            "training": s["name"],
            "tokens": s["tokens"],
            "tokens/s": s["tokens_per_second"],
            "hours": s["hours"],
            "how": s["note"],
        }
        for s in result["stages"]
    ]
    rows.append(
        {
            "training": "both stages",
            "tokens": result["two_stages"]["tokens"],
            "tokens/s": None,
            "hours": result["two_stages"]["hours"],
            "how": "sum",
        }
    )
    cpt = result["continual_pretraining"]
    rows.append(
        {
            "training": "continual pre-training on MMedC",
            "tokens": cpt["tokens"],
            "tokens/s": cpt["tokens_per_second"],
            "hours": cpt["hours"],
            "how": f"assumed: stage 1's tokens/s / {cpt['full_training_cost']:g}",
        }
    )
    return rows


REFERENCE_THROUGHPUT = {"stage1": 5550.0, "stage2": 4775.0}
"""Tokens per second of the recipe's stages at 8B with Unsloth on one H200, sequence length 2048, batch 1: DoRA
r=32 (stage 1) and QLoRA NF4 r=16 (stage 2); random weights, measured 2026-11-27 (the README's reference figures)."""
ASSUMED_TOKENS_PER_SAMPLE = 400
"""An assumption: tokens of one instruction sample (a question and a paragraph answer, or an exam item with its
rationale) in a Llama-3 tokenizer. The paper does not give it."""


def paper_scale_stages(
    full: Profile,
    samples: int = PAPER_SAMPLES,
    tokens_per_sample: float = ASSUMED_TOKENS_PER_SAMPLE,
    ift_share: float = 0.5,
    throughput: dict[str, float] | None = None,
) -> list[Throughput]:
    """The two stages at the paper's scale: ``samples`` instruction samples (a share ``ift_share`` of them in
    MMed-IFT for stage 1, the rest in MMed-IFT-MC for stage 2) of ``tokens_per_sample`` tokens, trained for the
    ``full`` profile's epochs at the reference throughput (:data:`REFERENCE_THROUGHPUT`). Every input is an
    assumption the notes say.

    >>> [round(s.hours, 2) for s in paper_scale_stages(load_profile("full"), 100_000, 500, 0.5, {"stage1": 1000.0,
    ...                                                "stage2": 1000.0})]
    [6.94, 13.89]
    """
    rate = throughput or REFERENCE_THROUGHPUT
    out = []
    for stage, share in (("stage1", ift_share), ("stage2", 1 - ift_share)):
        epochs = getattr(full, stage).num_train_epochs
        tokens = samples * share * tokens_per_sample * epochs
        note = (
            f"assumed: {samples * share:,.0f} samples x {tokens_per_sample:g} tokens x {epochs:g} epochs at "
            f"{rate[stage]:,.0f} tokens/s (reference figure)"
        )
        out.append(Throughput(stage, tokens, tokens / rate[stage], note))
    return out


def measured_throughput(run: RunLayout, stage: str, cfg: Profile, sample: int = 2000) -> Throughput:
    """Tokens and wall time of the recipe's ``stage`` (``stage1`` or ``stage2``) from its training record. Where
    the trainer did not count tokens (transformers' Trainer on the PEFT path), they are estimated as optimizer
    steps x batch x accumulation x the mean tokens per training example (up to ``sample`` examples tokenized as
    training tokenizes them)."""
    from transformers import AutoTokenizer

    from .train import load_sft_dataset, tokenize_completions

    folder = run.training(stage)
    out = read_manifest(folder.root)["outputs"]
    if out.get("trained_tokens"):
        return Throughput(stage, float(out["trained_tokens"]), float(out["wall_s"]), "measured by the trainer")
    stage_cfg: StageConfig = getattr(cfg, stage)
    with quiet():  # the loading and tokenizing maps' progress bars say nothing here
        dataset = load_sft_dataset(run.training_data(stage))
        if len(dataset) > sample:
            dataset = dataset.shuffle(seed=cfg.seed).select(range(sample))
        tok = AutoTokenizer.from_pretrained(str(folder.adapter))
        lengths = [len(x) for x in tokenize_completions(dataset, tok, cfg.model.max_seq_length)["input_ids"]]
    per_step = stage_cfg.per_device_train_batch_size * stage_cfg.gradient_accumulation_steps
    tokens = out["global_step"] * per_step * sum(lengths) / len(lengths)
    return Throughput(
        stage,
        tokens,
        float(out["wall_s"]),
        f"wall time measured; tokens estimated ({out['global_step']} steps x {per_step} examples x "
        f"{sum(lengths) / len(lengths):.0f} tokens)",
    )
