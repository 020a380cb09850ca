"""Dataset cards and publishing: the card says what the run recorded, the upload folder loads back as the Hub
serves it, and a push refuses early without a token or with the Hub switched off.

The run is real and small: notebook 01's generation with the extractive test generator on the bundled passages
plus one planted passage copying a bundled MedQA question, notebook 02's round trips with the tagging test
translator (one of them planted to reproduce a bundled MMedBench question) and the real CCTS scorer, and both
manifests written as the notebooks write them."""

import json
import re
import shutil
import socket
import statistics
import sys
from collections import Counter
from dataclasses import asdict
from fnmatch import fnmatch
from types import SimpleNamespace

import pytest
from conftest import ROOT
from test_datagen import ExtractiveBackend
from test_translate import TaggingTranslator

from mmed_helpers.core.artifacts import read_manifest
from mmed_helpers.core.card import DATA_FILE, PublishError, dataset_card, prepare_upload, push_to_hub, size_category
from mmed_helpers.core.corpus import Passage, corpus_path, load_corpus
from mmed_helpers.core.decontam import corpus_overlap
from mmed_helpers.core.languages import LANGUAGES
from mmed_helpers.core.layout import LayoutError, RunLayout
from mmed_helpers.core.llm import Completion
from mmed_helpers.core.notebook import start
from mmed_helpers.core.records import load_items
from mmed_helpers.steps.benchmarks import decontamination_index, load_profile_benchmarks
from mmed_helpers.steps.ccts import CCTSScorer
from mmed_helpers.steps.generate import prompt_hashes, run_datagen
from mmed_helpers.steps.translate import run_expansion, select_sources

LANGS = ["en", "fr", "ja"]
IN_COURSE_ORDER = [x for x in LANGUAGES if x in LANGS]
OVERRIDES = {"languages": LANGS, "ccts.max_source_samples": 2, "ccts.check_target_language": False}
SCORES = ["ccts", "bleu", "bertscore"]


def _passages(languages, per_language=2):
    """The first bundled passages of each language."""
    corpus = load_corpus(languages)
    return [p for lang in languages for p in [q for q in corpus if q.lang == lang][:per_language]]


def _generate(run_dir, overrides, passages, with_benchmarks: bool):
    """Notebook 01 (cells nb01-09 and nb01-19) with the extractive test generator."""
    step = start("generate", profile="smoke", run_dir=run_dir, overrides=overrides)
    cfg = step.cfg
    benchmarks = decontamination_index(cfg) if with_benchmarks else None
    result = run_datagen(cfg, step.run, ExtractiveBackend(passages), False, passages, benchmarks)
    corpus_check = corpus_overlap((p.text for p in passages), benchmarks) if benchmarks is not None else None
    step.write_manifest(
        parameters={"datagen": asdict(cfg.datagen)},
        inputs={f"corpus_{lang}": corpus_path(lang) for lang in cfg.languages},
        outputs={
            "backend": result.backend,
            "prompts_sha256": prompt_hashes(cfg.languages),
            "datasets": {p.name: str(p) for p in (step.run.ift, step.run.mc)},
            "reports": {k: r.to_dict() for k, r in result.reports.items()},
            "corpus_benchmark_overlap": corpus_check,
        },
        this_run={"generated_now": result.generated_now, "recovered_lines": result.recovered_lines},
    )
    return step


class PlantingTranslator(TaggingTranslator):
    """The tagging translator, except that one source text goes into French as a bundled MMedBench question (and
    comes back as itself): a perfect round trip that decontamination must remove."""

    def __init__(self, source: str, benchmark: str, **kwargs):
        super().__init__(**kwargs)
        self.swap = {("en", "fr"): {source: benchmark}, ("fr", "en"): {benchmark: source}}

    def translate(self, texts, src, tgt):
        table = self.swap.get((src, tgt), {})
        tagged = super().translate([t for t in texts if t not in table], src, tgt)[::-1]
        return [Completion(table[t]) if t in table else tagged.pop() for t in texts]


def _translate(run_dir, overrides, fr_question):
    """Notebook 02 (cells nb02-10 and nb02-18) with the planting test translator and the real scorer."""
    step = start("translate", profile="smoke", run_dir=run_dir, overrides=overrides)
    cfg, run = step.cfg, step.run
    datasets = {"ift": load_items(run.require("ift"), "ift"), "mc": load_items(run.require("mc"), "mc")}
    source = select_sources(datasets["ift"], cfg.ccts.source_language, cfg.ccts.max_source_samples)[0]
    translator = PlantingTranslator(source.question, fr_question, lossy={"ja"})
    scorer = CCTSScorer()
    result = run_expansion(
        cfg, run, translator, scorer, datasets, progress=False, benchmarks=decontamination_index(cfg)
    )
    rows = result.rows()
    kept = Counter((r["kind"], r["target_lang"]) for r in rows if r["kept"])
    step.write_manifest(
        parameters={"ccts": vars(cfg.ccts)},
        inputs={p.name: p for p in (step.run.ift, step.run.mc)},
        outputs={  # the notebook's "calibration" entry (a fit over the calibration pairs) is left out: no card reads it
            "translator": translator.describe(),
            "scorer": scorer.describe(),
            "threshold": cfg.ccts.threshold,
            "reasons": dict(Counter(r["reason"] for r in rows)),
            "pairs": len(result.pairs),
            "kept": {kind: len(items) for kind, items in result.kept.items()},
            "contamination": result.contamination.to_dict() if result.contamination else None,
            "kept_ids": sorted(r["id"] for r in rows if r["kept"]),
            "by_language": {
                f"{k}/{lang}": kept[k, lang] for k, lang in sorted({(r["kind"], r["target_lang"]) for r in rows})
            },
            "datasets": {p.name: str(p) for p in (step.run.ift_translated, step.run.mc_translated)},
        },
        this_run={"translated_now": result.translated_now, "recovered_lines": result.recovered_lines},
    )
    return source


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Notebooks 01 and 02 on three languages, with decontamination, one planted copy on each side."""
    root = tmp_path_factory.mktemp("card") / "run"
    cfg = start("generate", profile="smoke", run_dir=root, overrides=OVERRIDES).cfg
    bench = load_profile_benchmarks(cfg.evaluation, cfg.languages, True)[0]
    medqa = next(it for it in bench if it.benchmark == "medqa")
    fr_q = next(it for it in bench if it.benchmark == "mmedbench" and it.lang == "fr")
    clean = _passages(cfg.languages)
    en = next(p for p in clean if p.lang == "en")
    planted = Passage(
        "planted-1", "en", "cardiology", "Copied from an exam", "\n\n".join([medqa.question, *en.paragraphs[1:4]])
    )
    _generate(root, OVERRIDES, [*clean, planted], with_benchmarks=True)
    source = _translate(root, OVERRIDES, fr_q.question)
    return SimpleNamespace(run=RunLayout(root), medqa=medqa, fr_q=fr_q, source=source)


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """Notebook 01 only, English only, decontamination off (``datagen.decontamination_ngram: 0``)."""
    root = tmp_path_factory.mktemp("bare") / "run"
    overrides = {"languages": ["en"], "datagen.decontamination_ngram": 0}
    _generate(root, overrides, _passages(["en"]), with_benchmarks=False)
    return RunLayout(root)


def _rows(path):
    from datasets import load_from_disk

    return list(load_from_disk(str(path)))


def _expected(run: RunLayout, kind: str, translations: bool = True) -> list[dict]:
    """The run's rows as saved: the dataset's, then (with empty score columns on those) its kept translations."""
    base = _rows(run.require(kind))
    if not translations:
        return base
    return [{**r, **dict.fromkeys(SCORES)} for r in base] + _rows(run.require(f"{kind}_translated"))


def _tables(card: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The card's Markdown tables by their first header cell: (header, body rows), cells stripped."""

    def cells(line):
        return [c.strip() for c in line.strip().strip("|").split(" | ")]

    out = {}
    for block in card.split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) >= 2 and lines[0].startswith("| ") and lines[1].startswith("|---"):
            out[cells(lines[0])[0]] = (cells(lines[0]), [cells(ln) for ln in lines[2:]])
    return out


def _code(label: str) -> str:
    return re.fullmatch(r".*\((\w+)\)", label)[1]


def _load(folder, cache):
    from datasets import load_dataset

    return load_dataset(str(folder), split="train", cache_dir=str(cache))


# --------------------------------------------------------------------------- the card


def test_the_card_is_a_hub_dataset_card_with_the_runs_metadata(course):
    from huggingface_hub import DatasetCard

    run = course.run
    text = dataset_card(run, "mc", license="cc-by-4.0", repo_id="me/mmed-ift-mc")
    data = DatasetCard(text).data
    n = len(_expected(run, "mc"))
    assert data.license == "cc-by-4.0" and "Not chosen yet" not in text
    assert data.language == IN_COURSE_ORDER == [x for x in LANGUAGES if x in {r["lang"] for r in _expected(run, "mc")}]
    assert data.size_categories == [size_category(n)] == ["n<1K"]
    assert data.pretty_name == "MMed-IFT-MC" and "multiple-choice" in data.task_categories
    translated = any(r["origin"] == "translated" for r in _expected(run, "mc"))
    assert translated and "machine-translated" in data.tags  # tagged only when translations are in it
    assert fnmatch(DATA_FILE, data.configs[0]["data_files"][0]["path"])
    assert 'load_dataset("me/mmed-ift-mc", split="train")' in text and "arXiv 2409.05732" in text
    default = dataset_card(run, "ift")  # no licence chosen: the placeholder, and the line that says to set it
    assert DatasetCard(default).data.license == "other" and "**Not chosen yet**" in default
    assert DatasetCard(default).data.pretty_name == "MMed-IFT"
    assert "the course's bundled corpus" in default
    # no folder of this machine goes public: the scorer's packaged encoder path is recorded, shown by its name
    scorer_model = json.loads((run.step_dir("translate") / "manifest.json").read_text())["outputs"]["scorer"]
    assert any(str(v).startswith("/") for v in scorer_model.values()), scorer_model
    assert sys.prefix not in text and str(run.root) not in text and str(ROOT) not in text
    assert [size_category(k) for k in (0, 999, 1000, 9999, 10**6)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1K<n<10K",
        "1M<n<10M",
    ]


def test_the_cards_counts_equal_the_saved_datasets_and_the_manifests(course):
    """Rows per language and origin, the reject table, decontamination (both planted copies removed) and the
    CCTS figures, each against what the run saved, computed here on its own."""
    run = course.run
    generated = read_manifest(run.step_dir("generate"))["outputs"]
    translated = read_manifest(run.step_dir("translate"))["outputs"]
    scores = [json.loads(line) for line in run.ccts_scores.read_text(encoding="utf-8").splitlines()]
    removed_from_translations, outcomes = Counter(), Counter()
    for kind in ("ift", "mc"):
        card = dataset_card(run, kind)
        tables = _tables(card)

        rows = _expected(run, kind)
        saved = Counter((r["lang"], r["origin"]) for r in rows)
        assert saved[("en", "generated")] and saved[("fr", "translated")] and saved[("ja", "seed")]
        header, body = tables["language"]
        assert header == ["language", "seed", "generated", "translated", "total"]
        assert [_code(r[0]) for r in body[:-1]] == IN_COURSE_ORDER and body[-1][0] == "**all**"
        for r in body[:-1]:
            code = _code(r[0])
            assert [int(c) for c in r[1:4]] == [saved[code, o] for o in header[1:4]], r
            assert int(r[4]) == sum(1 for x in rows if x["lang"] == code)
        assert int(body[-1][-1]) == len(rows)

        report = generated["reports"][kind]
        header, body = tables["filter outcome"]
        assert {r[0]: int(r[1]) for r in body} == {"kept": report["kept"], **report["rejected"]}
        for r in body:
            assert [int(c) for c in r[2:]] == [report["by_language"][lang].get(r[0], 0) for lang in header[2:]]
        assert report["rejected"]["benchmark_overlap"] == 1  # the planted passage's item

        header, body = tables["benchmark"]
        found = report["contamination"]
        by_bench = {r[0]: r for r in body}
        assert list(by_bench) == list(found["benchmark_items"])
        for bench, r in by_bench.items():
            assert int(r[1]) == found["benchmark_items"][bench]
            assert int(r[2]) == found["removed"].get(bench, 0)
            assert r[4].startswith(f"{generated['corpus_benchmark_overlap'][bench]['in_corpus']} (")
            removed_from_translations[bench] += int(r[3])
        assert by_bench["medqa"][2] == "1" and by_bench["medqa"][4].startswith("1 (")  # planted in the corpus
        assert f"`{course.medqa.id}`" in card

        mine = [s for s in scores if s["kind"] == kind]
        header, body = tables["target language"]
        assert {_code(r[0]): int(r[3]) for r in body} == {
            lang: translated["by_language"][f"{kind}/{lang}"] for lang in ("fr", "ja")
        }
        kept = _rows(run.require(f"{kind}_translated"))
        complete = [s["ccts"] for s in mine if s["ccts"] is not None]
        means = {r[0]: r for r in tables["round trips"][1]}
        assert (
            means["kept"][1] == str(len(kept))
            and means["kept"][2] == f"{statistics.fmean(r['ccts'] for r in kept):.3f}"
        )
        assert means["all complete round trips"][2] == f"{statistics.fmean(complete):.3f}"
        assert f"at least **{translated['threshold']}**" in card
        outcomes.update({r[0]: int(r[1]) for r in tables["round-trip outcome"][1]})

    assert removed_from_translations == Counter(translated["contamination"]["removed"]) == Counter(mmedbench=1)
    assert (
        outcomes == Counter(translated["reasons"])
        and outcomes["kept"]
        and outcomes["below_threshold"] + outcomes["meaning_changed"]
    )
    assert f"`{course.fr_q.id}`" in dataset_card(run, "ift")


def test_the_upload_folder_loads_back_with_the_hubs_loader(course, tmp_path):
    from datasets import load_from_disk
    from huggingface_hub import DatasetCard

    run = course.run
    folder = prepare_upload(run, "ift", run.publish_folder("ift"), license="cc-by-4.0")
    assert folder == run.root / "02_translate_ccts" / "publish" / "mmed_ift"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["README.md", DATA_FILE]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card == dataset_card(run, "ift", license="cc-by-4.0")
    assert DatasetCard(card).data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*"}]

    loaded = _load(folder, tmp_path / "cache")
    assert list(loaded) == _expected(run, "ift")
    assert loaded.column_names == [*load_from_disk(str(run.ift)).column_names, *SCORES]
    assert set(loaded["origin"]) == {"seed", "generated", "translated"}

    alone = prepare_upload(run, "ift", folder, include_translations=False)  # replaces the folder as a whole
    loaded = _load(alone, tmp_path / "cache2")
    assert list(loaded) == _expected(run, "ift", translations=False)
    assert loaded.features == load_from_disk(str(run.ift)).features
    assert "Translations: left out of this upload." in (alone / "README.md").read_text(encoding="utf-8")

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(PublishError, match="holds other files than an upload folder's"):
        prepare_upload(run, "ift", mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(LayoutError, match="unknown dataset kind 'stage1'"):
        run.publish_folder("stage1")


def test_a_card_without_translations_or_decontamination_still_builds(bare, tmp_path):
    from huggingface_hub import DatasetCard

    card = dataset_card(bare, "mc")
    assert DatasetCard(card).data.language == ["en"]
    assert "Translations: none (notebook 02_translate_ccts has not run on this run)." in card
    assert "## Translation and CCTS" not in card and "machine-translated" not in card
    assert "Off for this run (`datagen.decontamination_ngram: 0`)" in card
    tables = _tables(card)
    assert "benchmark" not in tables and "target language" not in tables
    saved = Counter(r["origin"] for r in _rows(bare.mc))
    assert [int(c) for c in tables["language"][1][-1][1:4]] == [saved["seed"], saved["generated"], 0]
    loaded = _load(prepare_upload(bare, "mc", tmp_path / "up"), tmp_path / "cache")
    assert list(loaded) == _rows(bare.mc)


def test_a_card_from_your_own_corpus_says_so_and_asks_for_its_licence(bare, tmp_path):
    """Notebook 01 on your own files records no bundled corpus inputs, and what it read under ``corpus``."""
    copy = tmp_path / "run"
    shutil.copytree(bare.root, copy)
    run = RunLayout(copy)
    manifest = run.step_dir("generate") / "manifest.json"
    record = json.loads(manifest.read_text())
    record["inputs"] = {}
    record["outputs"]["corpus"] = {"kind": "files", "source": "/data/guidelines", "passages": 2, "ingest": None}
    manifest.write_text(json.dumps(record))
    card = dataset_card(run, "ift")
    assert "your own corpus, `…/guidelines` (files, 2 passages used). Its licence is yours to state" in card
    assert "/data/" not in card  # the folder of the machine is not published
    assert "**Not chosen yet**" in card and "bundled corpus" not in card
    assert "the course's bundled corpus" in dataset_card(bare, "ift")


def test_translations_made_from_another_dataset_are_refused(course, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(course.run.root, copy)
    run = RunLayout(copy)
    manifest = run.step_dir("translate") / "manifest.json"
    record = json.loads(manifest.read_text())
    record["inputs"][run.ift.name]["sha256"] = "0" * 64  # as if notebook 01 had run again since
    manifest.write_text(json.dumps(record))
    with pytest.raises(PublishError, match="made from another MMed-IFT .*run notebook 02_translate_ccts again"):
        prepare_upload(run, "ift", tmp_path / "up")
    assert not (tmp_path / "up").exists()
    assert "Translations: left out of this upload." in dataset_card(run, "ift", include_translations=False)
    assert "Translations: the kept ones" in dataset_card(run, "mc")


# --------------------------------------------------------------------------- pushing


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """What would reach the Hub: ``HfApi``'s two calls, recorded (the folder uploaded is copied as it was sent),
    and any socket connection fails the test."""
    from huggingface_hub import HfApi, RepoUrl, constants

    sent = []

    def create_repo(self, repo_id, **kwargs):
        sent.append(("create_repo", repo_id, {**kwargs, "token": self.token}))
        return RepoUrl(f"{constants.ENDPOINT}/datasets/{repo_id}")

    def upload_folder(self, **kwargs):
        shutil.copytree(kwargs["folder_path"], tmp_path / "sent")
        sent.append(("upload_folder", kwargs["repo_id"], {**kwargs, "token": self.token}))

    def connect(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return sent


def test_push_to_hub_needs_a_token_in_the_environment(course, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PublishError, match=r"HF_TOKEN is not set\. Create a token .*huggingface\.co/settings/tokens"):
        push_to_hub(course.run, "ift", "me/mmed-ift")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setenv("MMED_TEST_TOKEN", "  ")
    with pytest.raises(PublishError, match=r"MMED_TEST_TOKEN is not set.*export MMED_TEST_TOKEN=hf_"):
        push_to_hub(course.run, "ift", "me/mmed-ift", token_env="MMED_TEST_TOKEN")
    assert hub == []


def test_push_to_hub_refuses_an_offline_process_and_sends_nothing(course, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(PublishError, match=r"\(HF_HUB_OFFLINE set;.*unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE"):
        push_to_hub(course.run, "mc", "me/mmed-ift-mc")
    # the variables gone but huggingface_hub imported while they were set: it would still refuse every request
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match=r"when huggingface_hub was imported.*start a new Python process"):
        push_to_hub(course.run, "mc", "me/mmed-ift-mc")
    assert hub == []


def test_push_to_hub_uploads_the_prepared_folder_as_a_private_dataset(course, hub, monkeypatch, tmp_path):
    from huggingface_hub import DatasetCard, constants

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    url = push_to_hub(course.run, "mc", "me/mmed-ift-mc", license="cc-by-4.0")
    assert url == "https://huggingface.co/datasets/me/mmed-ift-mc"
    assert [(call, repo) for call, repo, _ in hub] == [
        ("create_repo", "me/mmed-ift-mc"),
        ("upload_folder", "me/mmed-ift-mc"),
    ]
    assert hub[0][2] == {"repo_type": "dataset", "private": True, "exist_ok": True, "token": "hf_test"}
    upload = hub[1][2]
    assert upload["repo_type"] == "dataset" and upload["token"] == "hf_test" and upload["delete_patterns"] == ["data/*"]
    assert not upload["folder_path"].exists()  # the temporary folder is gone
    sent = tmp_path / "sent"
    card = DatasetCard((sent / "README.md").read_text(encoding="utf-8"))
    assert card.data.license == "cc-by-4.0" and 'load_dataset("me/mmed-ift-mc"' in card.text
    assert list(_load(sent, tmp_path / "cache")) == _expected(course.run, "mc")
