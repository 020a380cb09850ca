"""Where the course keeps things: the package's bundled data, and every artifact of a run, named once.

A run lives in one folder. Each notebook (a *step*) writes into its own subfolder, named like the notebook, and
reads what earlier steps wrote. Notebooks and helpers never spell a path: they ask the run's layout for an
artifact by name, and :meth:`RunLayout.require` turns a missing input into the one error that says which
notebook to run::

    >>> run = RunLayout("/tmp/run")
    >>> run.ift                                   # MMed-IFT, written by notebook 01
    PosixPath('/tmp/run/01_generate_qa/mmed_ift')
    >>> run.require("stage1_merged")              # doctest: +SKIP
    MissingArtifactError: stage-1 merged model not found at /tmp/run/03_stage1_dora/merged; run notebook
    03_stage1_dora first

:func:`artifact_table` lists every artifact with the step that writes it (the README's data-flow table).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .modeldir import BaseModelInfo, check_model_dir

# --------------------------------------------------------------------------- the package's own files

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROFILE_DIR = PACKAGE_DIR / "profiles"
DATA_DIR = PACKAGE_DIR / "data"
CORPUS_DIR = DATA_DIR / "corpus"
PROMPTS_DIR = DATA_DIR / "prompts"
SEEDS_DIR = DATA_DIR / "seeds"
EVAL_DIR = DATA_DIR / "eval"
CCTS_CALIBRATION_DIR = DATA_DIR / "ccts_calibration"
CCTS_HELDOUT_DIR = CCTS_CALIBRATION_DIR / "heldout"
"""Labelled round trips written after the guard lexicon and the fit were frozen, by a writer who saw neither:
never fitted on, they measure the keep decision out of sample."""
"""Labelled round trips (``<lang>.jsonl``) the CCTS is calibrated on, and the meaning guard's lexicon."""

PUBMEDQA_TEST_FOLD = EVAL_DIR / "pubmedqa_test_fold.txt"
"""The PMIDs of PubMedQA's 500-item test fold."""

# --------------------------------------------------------------------------- the steps of a run

STEPS: dict[str, str] = {
    "setup": "00_setup",
    "generate": "01_generate_qa",
    "translate": "02_translate_ccts",
    "stage1": "03_stage1_dora",
    "stage2": "04_stage2_qlora",
    "evaluate": "05_evaluate",
    "ablations": "06_ablations",
}
"""Step key -> its notebook, which is also the name of the step's folder in the run."""


RUNNER = "runner"
"""The writer of what the runner itself keeps in a run (executed notebooks, the summary)."""


def _writer(writer: str) -> str:
    return "the course runner (mmed-course run)" if writer == RUNNER else f"notebook {STEPS[writer]}"


class MissingArtifactError(FileNotFoundError):
    """An input of a step is not in the run yet; the message names the notebook that writes it."""


class LayoutError(KeyError):
    """An unknown step or artifact name (the message lists the known ones)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def step_folder(step: str) -> str:
    """The folder (and notebook) name of step ``step``: ``step_folder("stage1") == "03_stage1_dora"``."""
    try:
        return STEPS[step]
    except KeyError:
        raise LayoutError(f"unknown step {step!r}; the steps are {list(STEPS)}") from None


_PRESENT = {
    "file": lambda p: p.is_file(),
    "dir": lambda p: p.is_dir(),
    "dataset": lambda p: (p / "dataset_info.json").is_file(),
    "model": lambda p: (p / "config.json").is_file(),
    "adapter": lambda p: (p / "adapter_config.json").is_file(),
}


@dataclass(frozen=True)
class Artifact:
    """One named thing in a run folder. On a :class:`RunLayout` it reads as its path (``run.ift``)."""

    rel: str
    """Path relative to the run folder."""
    writer: str
    """Key of the step that writes it."""
    kind: str
    """``file``, ``dir``, ``dataset`` (``save_to_disk``), ``model`` (``config.json``) or ``adapter``."""
    what: str
    """What it is, in words (for errors and the README's table)."""
    name: str = field(default="", compare=False)

    def __set_name__(self, owner, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __get__(self, run: RunLayout | None, owner=None):
        return self if run is None else run.root / self.rel

    def present(self, path: Path) -> bool:
        return _PRESENT[self.kind](path)


@dataclass(frozen=True)
class TrainDir:
    """What one training run writes into its folder (stage 1, stage 2, the single-stage ablation)."""

    root: Path
    ADAPTER = "adapter"

    @property
    def adapter(self) -> Path:
        return self.root / self.ADAPTER

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def log_history(self) -> Path:
        return self.root / "log_history.json"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files (``tensorboard --logdir <this>``)."""
        return self.root / "tensorboard"

    @property
    def manifest(self) -> Path:
        """The run's record: config, inputs, and its ``identity`` (what a rerun must match to reuse it)."""
        return self.root / "manifest.json"

    @property
    def started_with(self) -> Path:
        """The ``identity`` the training in progress was started with (what a resume from its checkpoints must
        match), written before the first step."""
        return self.root / "run_identity.json"


@dataclass(frozen=True)
class VariantDir:
    """What one ablation variant of notebook 06 writes into its folder: the training sets it derived, its
    trainings (each a :class:`TrainDir`), its merged stage 1 when it trains a stage 2 on it, its scores and its
    manifest."""

    root: Path

    @property
    def data(self) -> Path:
        """The variant's own training sets (a filtered copy of a run dataset keeps that dataset's name)."""
        return self.root / "data"

    def dataset(self, source: Path) -> Path:
        """Where the variant keeps its own version of run dataset ``source``."""
        return self.data / Path(source).name

    @property
    def stage1(self) -> TrainDir:
        return TrainDir(self.root / "stage1")

    @property
    def stage1_merged(self) -> Path:
        """Its stage-1 adapter merged into the base (the start of its stage 2)."""
        return self.root / "stage1_merged"

    @property
    def stage2(self) -> TrainDir:
        return TrainDir(self.root / "stage2")

    @property
    def scores(self) -> Path:
        """Its scored answers and what they were scored on (``evaluate_or_reuse``'s store)."""
        return self.root / "scores.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


def _in(step: str, *parts: str) -> str:
    return "/".join((STEPS[step], *parts))


_TRAIN = "train"

TRAINING_DATA: dict[str, tuple[str, ...]] = {
    "stage1": ("ift", "ift_translated"),
    "stage2": ("mc", "mc_translated"),
    "single_stage": ("mc", "mc_translated"),
}
"""What each training learns from: stage 1 the general set, stage 2 and the single-stage ablation the MC set,
each with its kept translations."""


class RunLayout:
    """Every artifact of a run under ``root``, by name. Paths are absolute; nothing is created."""

    # 00 setup
    base_record = Artifact("base_model.json", "setup", "file", "base model record")
    tiny_base = Artifact("models/base", "setup", "model", "embedded tiny base model")
    # 01 generate
    ift = Artifact(_in("generate", "mmed_ift"), "generate", "dataset", "MMed-IFT dataset")
    mc = Artifact(_in("generate", "mmed_ift_mc"), "generate", "dataset", "MMed-IFT-MC dataset")
    generation_raw = Artifact(_in("generate", "raw"), "generate", "dir", "raw generation outputs (JSONL per step)")
    # 02 translate + CCTS
    ift_translated = Artifact(
        _in("translate", "mmed_ift_translated"), "translate", "dataset", "kept MMed-IFT translations"
    )
    mc_translated = Artifact(
        _in("translate", "mmed_ift_mc_translated"), "translate", "dataset", "kept MMed-IFT-MC translations"
    )
    translation_raw = Artifact(_in("translate", "raw"), "translate", "dir", "raw translations (forward, backward)")
    ccts_scores = Artifact(_in("translate", "scores.jsonl"), "translate", "file", "CCTS score of every round trip")
    publish = Artifact(
        _in("translate", "publish"), "translate", "dir", "Hub upload folders: each dataset's card and Parquet file"
    )
    # 03 stage 1
    stage1_train = Artifact(_in("stage1", _TRAIN), "stage1", "dir", "stage-1 training folder")
    stage1_adapter = Artifact(_in("stage1", _TRAIN, TrainDir.ADAPTER), "stage1", "adapter", "stage-1 DoRA adapter")
    stage1_merged = Artifact(_in("stage1", "merged"), "stage1", "model", "stage-1 merged model")
    stage1_merge_check = Artifact(
        _in("stage1", "merge_check.json"), "stage1", "file", "the merge check's result and what it checked"
    )
    # 04 stage 2
    stage2_train = Artifact(_in("stage2", _TRAIN), "stage2", "dir", "stage-2 training folder")
    stage2_adapter = Artifact(_in("stage2", _TRAIN, TrainDir.ADAPTER), "stage2", "adapter", "stage-2 QLoRA adapter")
    stage2_merged = Artifact(_in("stage2", "merged"), "stage2", "model", "stage-2 merged model (optional)")
    # 05 evaluate
    single_stage_train = Artifact(
        _in("evaluate", "single_stage"), "evaluate", "dir", "single-stage ablation training folder"
    )
    single_stage_adapter = Artifact(
        _in("evaluate", "single_stage", TrainDir.ADAPTER), "evaluate", "adapter", "single-stage ablation adapter"
    )
    eval_results = Artifact(_in("evaluate", "results.json"), "evaluate", "file", "evaluation results")
    eval_by_model = Artifact(
        _in("evaluate", "by_model"), "evaluate", "dir", "each model's scored answers, with what they were scored on"
    )
    # 06 ablations
    ablation_variants = Artifact(
        _in("ablations", "variants"), "ablations", "dir", "one folder per ablation variant (data, training, scores)"
    )
    ablation_results = Artifact(
        _in("ablations", "results.json"), "ablations", "file", "every ablation variant's accuracy, test and cost"
    )
    # the runner
    executed_notebooks = Artifact("notebooks", RUNNER, "dir", "executed notebooks of the run")
    summary = Artifact("run_summary.json", RUNNER, "file", "the runner's summary")

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"

    @classmethod
    def artifacts(cls) -> dict[str, Artifact]:
        """Every artifact, by name, in the order of the steps."""
        return {k: v for k, v in vars(cls).items() if isinstance(v, Artifact)}

    def step_dir(self, step: str) -> Path:
        """The folder of step ``step`` (``run.step_dir("stage1")`` -> ``<root>/03_stage1_dora``)."""
        return self.root / step_folder(step)

    def has(self, name: str) -> bool:
        """True if the run holds artifact ``name`` (complete: a model with its config, a saved dataset, ...)."""
        art = self._artifact(name)
        return art.present(self.root / art.rel)

    def _artifact(self, name: str) -> Artifact:
        art = self.artifacts().get(name)
        if art is None:
            raise LayoutError(f"unknown artifact {name!r}; the artifacts are {list(self.artifacts())}")
        return art

    def require(self, name: str) -> Path:
        """The path of artifact ``name`` if the run has it; else :class:`MissingArtifactError` naming the
        notebook that writes it."""
        art = self._artifact(name)
        path = self.root / art.rel
        if not art.present(path):
            raise MissingArtifactError(f"{art.what} not found at {path}; run {_writer(art.writer)} first")
        return path

    # artifacts with a part chosen at run time

    def generation_store(self, step: str) -> Path:
        """The resumable JSONL store of generation step ``step`` (``condense``, ``ift``, ``mc``)."""
        return self.generation_raw / f"{step}.jsonl"

    def store_identity(self, raw: str) -> Path:
        """What the stores of ``generation_raw`` or ``translation_raw`` were made with (backend, model,
        settings, prompts): a rerun with other settings is refused instead of reusing their outputs."""
        return getattr(self, raw) / "identity.json"

    def translation_store(self, direction: str) -> Path:
        """The resumable JSONL store of the ``forward`` or ``backward`` translations."""
        return self.translation_raw / f"{direction}.jsonl"

    def publish_folder(self, kind: str) -> Path:
        """The Hub upload folder of MMed-IFT (``ift``) or MMed-IFT-MC (``mc``), named like the dataset: its card
        (``README.md``) and its rows (``data/``), written by :func:`~mmed_helpers.core.card.prepare_upload`."""
        if kind not in ("ift", "mc"):
            raise LayoutError(f"unknown dataset kind {kind!r}; the kinds are ['ift', 'mc']")
        return self.publish / Path(self._artifact(kind).rel).name

    def eval_model_results(self, model: str) -> Path:
        """Model ``model``'s scored answers and their identity (reused by a rerun that would score the same)."""
        return self.eval_by_model / f"{model}.json"

    def variant(self, name: str) -> VariantDir:
        """The folder of ablation variant ``name`` (notebook 06)."""
        return VariantDir(self.ablation_variants / name)

    def training(self, name: str) -> TrainDir:
        """The training folder of ``stage1``, ``stage2`` or ``single_stage``."""
        if name not in TRAINING_DATA:
            raise LayoutError(f"unknown training {name!r}; the trainings are {list(TRAINING_DATA)}")
        return TrainDir(getattr(self, f"{name}_train"))

    def training_data(self, name: str) -> list[Path]:
        """The datasets training ``name`` learns from (each required: a missing one names its notebook)."""
        self.training(name)
        return [self.require(a) for a in TRAINING_DATA[name]]

    # the base model record

    def write_base_model(self, info: BaseModelInfo) -> Path:
        from .artifacts import atomic_write_text

        return atomic_write_text(self.base_record, json.dumps(asdict(info), indent=2) + "\n")

    def base_model(self) -> BaseModelInfo:
        """The base model notebook 00 recorded for this run (its directory checked)."""
        info = BaseModelInfo(**json.loads(self.require("base_record").read_text(encoding="utf-8")))
        check_model_dir(Path(info.path))
        return info


def artifact_table() -> list[dict[str, Any]]:
    """One row per artifact: name, path in the run, kind, the notebook that writes it, what it is."""
    return [
        {"name": n, "path": a.rel, "kind": a.kind, "written by": _writer(a.writer), "what": a.what}
        for n, a in RunLayout.artifacts().items()
    ]


# --------------------------------------------------------------------------- where runs go


def project_root(start_dir: str | Path | None = None) -> Path:
    """The course checkout holding ``notebooks/`` (searched upwards from ``start_dir``), else ``start_dir``."""
    here = Path(start_dir or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "notebooks").is_dir() and (d / "mmed_helpers").is_dir():
            return d
    return here


def default_run_dir(profile_name: str) -> Path:
    """``$MMED_RUNS_DIR/<profile>`` if set, else ``<project root>/runs/<profile>``."""
    from .flags import runs_dir

    return (runs_dir() or project_root() / "runs") / profile_name
