"""The facts defined once in ``mmed_helpers.core``: languages, the MC format, the run layout, the JSONL reader,
environment flags and the dtype rule."""

import ast
import json

import pytest
import torch
from conftest import ROOT

from mmed_helpers.core import flags
from mmed_helpers.core.device import resolve_dtype
from mmed_helpers.core.jsonl import parse_jsonl, read_jsonl
from mmed_helpers.core.languages import LANGUAGES, TABLE, language, language_or_default
from mmed_helpers.core.layout import (
    CORPUS_DIR,
    EVAL_DIR,
    PROMPTS_DIR,
    SEEDS_DIR,
    STEPS,
    LayoutError,
    MissingArtifactError,
    RunLayout,
    artifact_table,
)
from mmed_helpers.core.mcformat import (
    LETTERS,
    FormatError,
    answer_letters,
    extract_answers,
    mc_prompt,
    mc_target,
    options_list,
)
from mmed_helpers.core.modeldir import BaseModelInfo
from mmed_helpers.core.records import MCItem
from mmed_helpers.steps.benchmarks import EvalItem, load_benchmark

OPTIONS = ["Thiamine", "Cobalamin", "Folate", "Niacin", "Pyridoxine"]

# --------------------------------------------------------------------------- languages


def test_the_language_table_is_the_course():
    assert LANGUAGES == ("en", "zh", "ja", "fr", "ru", "es") == tuple(TABLE)
    assert language("ru").nllb == "rus_Cyrl" and language("zh").m2m == "zh" and language("zh").m2m_token == "__zh__"
    assert language_or_default("de") is TABLE["en"]
    with pytest.raises(KeyError, match="unknown language 'de'"):
        language("de")
    for field in ("name", "mmedbench_file", "nllb", "ask", "ask_multi", "answer_label", "rationale_label"):
        values = [getattr(row, field) for row in TABLE.values()]
        assert all(values), field
        if field not in ("name",):
            assert len(set(values)) == len(values), f"two languages share {field}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_language_has_its_bundled_material(lang):
    """Adding a language to the table needs its corpus, prompts, seeds and MMedBench file: all six have them."""
    assert (CORPUS_DIR / f"{lang}.jsonl").is_file()
    assert {p.stem for p in (PROMPTS_DIR / lang).glob("*.yaml")} >= {"condense", "ift", "mc"}
    assert (SEEDS_DIR / "ift" / f"{lang}.jsonl").is_file() and (SEEDS_DIR / "mc" / f"{lang}.jsonl").is_file()
    assert (EVAL_DIR / "mmedbench" / f"{TABLE[lang].mmedbench_file}.jsonl").is_file()


# --------------------------------------------------------------------------- the MC format


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("answers", [["B"], ["A", "C"], ["B", "D", "E"]])
def test_what_stage2_learns_to_write_is_what_evaluation_reads(lang, answers):
    target = mc_target(answers, OPTIONS, "Because ...", lang)
    assert target.startswith(f"{TABLE[lang].answer_label}: ")
    assert extract_answers(target, len(OPTIONS)) == answers


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("lang", LANGUAGES)
def test_evaluation_asks_exactly_what_stage2_trains_on(lang, multi):
    answers = ["A", "C"] if multi else ["B"]
    ev = EvalItem("x", "mmedbench", lang, "Which vitamin ...?", OPTIONS, answers)
    assert ev.chat_prompt() == mc_prompt("Which vitamin ...?", OPTIONS, lang, multi=multi)
    assert ev.chat_prompt().endswith(TABLE[lang].ask_multi if multi else TABLE[lang].ask)
    if not multi:  # the training record of the same single-answer item
        item = MCItem("x", lang, "Which vitamin ...?", OPTIONS, "B", "Because ...")
        assert item.to_messages()[0]["content"] == ev.chat_prompt()
        assert extract_answers(item.to_messages()[1]["content"], len(OPTIONS)) == ev.answers


def test_bundled_multi_answer_items_are_asked_for_all_answers():
    items = [it for it in load_benchmark("mmedbench", "bundled", languages=["ja", "fr"]).items if it.multi]
    assert items and all(it.chat_prompt().endswith(TABLE[it.lang].ask_multi) for it in items)


def test_format_errors_are_clear():
    assert options_list({"A": " x ", "B": "y"}) == ["x", "y"] == options_list(["x", "y"])
    with pytest.raises(FormatError, match="lettered A, B, C, ... in order, got \\['B', 'A'\\]"):
        options_list({"B": "x", "A": "y"})
    with pytest.raises(FormatError, match="list of strings"):
        options_list("A. x")
    assert answer_letters("C,A", 4) == ["A", "C"] == answer_letters("AC", 4) == answer_letters("a c", 4)
    with pytest.raises(FormatError, match="not one or more of the option letters ABCD"):
        answer_letters("E", 4)
    with pytest.raises(FormatError, match="not among the option letters"):
        mc_target(["F"], OPTIONS, "r", "en")


def test_option_letters_are_defined_once():
    """No module but ``mcformat`` spells a run of option letters."""
    spelled = []
    for path in (ROOT / "mmed_helpers").rglob("*.py"):
        if path.name == "mcformat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("ABC"):
                spelled.append(f"{path.name}: {node.value!r}")
    assert spelled == []
    assert LETTERS == "ABCDEFGHIJ"


# --------------------------------------------------------------------------- the run layout


def test_layout_names_every_artifact_under_its_step(tmp_path):
    run = RunLayout(tmp_path)
    assert run.ift == tmp_path / "01_generate_qa" / "mmed_ift"
    assert run.stage1_adapter == run.training("stage1").adapter == tmp_path / "03_stage1_dora" / "train" / "adapter"
    assert run.generation_store("mc") == tmp_path / "01_generate_qa" / "raw" / "mc.jsonl"
    assert run.translation_store("backward") == tmp_path / "02_translate_ccts" / "raw" / "backward.jsonl"
    assert run.step_dir("evaluate") == tmp_path / "05_evaluate"
    rows = artifact_table()
    assert {r["name"] for r in rows} == set(RunLayout.artifacts())
    for row in rows:  # each artifact lives in the folder of the step that writes it (or at the top)
        top = row["path"].split("/")[0]
        assert top not in STEPS.values() or row["written by"] == f"notebook {top}", row


def test_require_names_the_notebook_that_writes_a_missing_artifact(tmp_path):
    run = RunLayout(tmp_path)
    for name in RunLayout.artifacts():
        with pytest.raises(MissingArtifactError, match=f"not found at {tmp_path}/.*; run .*first"):
            run.require(name)
        assert not run.has(name)
    with pytest.raises(MissingArtifactError, match="stage-2 QLoRA adapter not found .* run notebook 04_stage2_qlora"):
        run.require("stage2_adapter")
    with pytest.raises(MissingArtifactError, match="run the course runner"):
        run.require("summary")
    run.stage2_adapter.mkdir(parents=True)
    assert not run.has("stage2_adapter")  # a folder without adapter_config.json is not an adapter
    (run.stage2_adapter / "adapter_config.json").write_text("{}")
    assert run.require("stage2_adapter") == run.stage2_adapter and run.has("stage2_adapter")
    with pytest.raises(LayoutError, match="unknown artifact 'stage3'"):
        run.require("stage3")
    with pytest.raises(LayoutError, match="unknown step 'stage3'"):
        run.step_dir("stage3")
    with pytest.raises(LayoutError, match="unknown training 'stage3'"):
        run.training("stage3")


def test_training_data_is_required_and_in_recipe_order(tmp_path):
    from mmed_helpers.core.records import save_dataset, to_dataset

    run = RunLayout(tmp_path)
    with pytest.raises(MissingArtifactError, match="MMed-IFT-MC dataset .* run notebook 01_generate_qa first"):
        run.training_data("stage2")
    for path in (run.mc, run.mc_translated):
        save_dataset(to_dataset([], "mc"), path)
    assert run.training_data("stage2") == [run.mc, run.mc_translated] == run.training_data("single_stage")


def test_base_model_record_round_trips(tiny_dir, tmp_path):
    run = RunLayout(tmp_path)
    info = BaseModelInfo("tiny", str(tiny_dir), "tiny")
    run.write_base_model(info)
    assert json.loads(run.base_record.read_text())["path"] == str(tiny_dir)
    assert run.base_model() == info


# --------------------------------------------------------------------------- JSONL, flags, dtype


def test_jsonl_lines_carry_their_address_and_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n[1, 2]\n', encoding="utf-8")
    lines = list(read_jsonl(path))
    assert [ln.where for ln in lines] == ["x.jsonl:1", "x.jsonl:3", "x.jsonl:4"]
    assert lines[0].record == {"a": 1} and lines[0].error is None
    assert lines[1].record is None and lines[1].error.startswith("not valid JSON (")
    assert lines[2].record == [1, 2]
    assert list(parse_jsonl("", "empty.jsonl")) == []


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("TRUE", True), ("yes", True), ("On", True), ("0", False), ("", False)]
)
def test_one_rule_reads_every_flag(monkeypatch, value, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setenv("MMED_DISABLE_UNSLOTH", value)
    assert flags.hub_offline() is expected and flags.unsloth_disabled() is expected


def test_runtime_env_and_runs_dir(monkeypatch, tmp_path):
    class Offline:
        offline = True

    class Online:
        offline = False

    assert flags.runtime_env(Offline())["HF_DATASETS_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in flags.runtime_env(Online())
    assert flags.runtime_env(Online())["UNSLOTH_DISABLE_STATISTICS"] == "1"
    monkeypatch.setenv("MMED_RUNS_DIR", str(tmp_path))
    from mmed_helpers.core.layout import default_run_dir

    assert default_run_dir("smoke") == tmp_path / "smoke"
    monkeypatch.delenv("MMED_RUNS_DIR")
    assert flags.runs_dir() is None


def test_one_dtype_rule():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16 and resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="model.dtype 'float33' is not a torch dtype"):
        resolve_dtype("float33")


def test_flags_and_notebook_start_import_no_heavy_library():
    """conftest and every notebook import these before the Hugging Face libraries read HF_HUB_OFFLINE."""
    import subprocess
    import sys

    code = (
        "import sys, mmed_helpers.core.flags, mmed_helpers.core.notebook, mmed_helpers.core.layout; "
        "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
