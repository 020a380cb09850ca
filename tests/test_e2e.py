"""The whole course on the smoke profile, run as a user would: through the console command."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import ROOT

from mmed_helpers.core.config import load_profile
from mmed_helpers.runner import discover_notebooks

SMOKE = load_profile("smoke")
STAGE1_MIN_VALIDATION_DROP = 0.01
"""Stage 1 must lower the held-out IFT loss by more than this (measured 1.8 % and 2.3 % on two kinds of CPU; see
the README's smoke table)."""
STAGE2_MIN_PARSE_RATE = 0.6
"""Share of stage 2's generated replies with a readable answer: a canary that stage 2 taught the format. Since the
MC target dropped its rationale label (``mcformat.mc_target``) it measured 89 % in `make course` and 91-99 % when
only stage 2 was retrained (seeds 42, 1, 7) on an Intel Xeon (AVX512), above the course's 80 % goal; with the label
it was 36-92 % depending on the CPU and seed. The canary sits lower because the tiny model's training is chaotic
across CPUs; a stage 2 that learns nothing stays near the base's 0-3 %."""


@pytest.mark.e2e
def test_smoke_course_runs_end_to_end(smoke_course, tmp_path):
    run, proc = smoke_course
    cli = Path(sys.executable).with_name("mmed-course")
    notebooks = discover_notebooks(ROOT / "notebooks")
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["ok"] and [r["name"] for r in summary["results"]] == [p.stem for p in notebooks]
    for p in notebooks:
        assert re.search(rf"^{p.name[:2]}\s+{p.stem}\s+ok\s", proc.stdout, re.M)
        executed = nbformat.read(run / "notebooks" / p.name, as_version=4)
        assert all(c.execution_count for c in executed.cells if c.cell_type == "code" and c.source.strip())

    # 00_setup: the base model, its record and the manifest
    base = json.loads((run / "base_model.json").read_text())
    assert base["source"] == "tiny" and (Path(base["path"]) / "model.safetensors").is_file()
    manifest = json.loads((run / "00_setup" / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["inputs"]["base_model"]["identity"]
    assert manifest["outputs"]["model"]["architecture"] == "LlamaForCausalLM"
    assert {r["lang"] for r in manifest["outputs"]["tokenizer_fertility"]} == {"en", "zh", "ja", "fr", "ru", "es"}
    assert (run / "00_setup" / "tokenizer_fertility.png").stat().st_size > 5000
    setup = nbformat.read(run / "notebooks" / "00_setup.ipynb", as_version=4)
    text = "\n".join(o.get("text", "") for c in setup.cells for o in c.get("outputs", []))
    expected = "CUDA GPU fast path" if torch.cuda.is_available() else "not used: training runs on transformers + PEFT"
    assert expected in text

    # 01_generate_qa: both datasets in chat form, with a manifest that accounts for every output
    from datasets import load_from_disk

    gen = run / "01_generate_qa"
    m01 = json.loads((gen / "manifest.json").read_text())
    assert m01["outputs"]["backend"]["backend"] == "local"
    assert len(m01["outputs"]["prompts_sha256"]) == 18
    for kind, name in (("ift", "mmed_ift"), ("mc", "mmed_ift_mc")):
        ds = load_from_disk(str(gen / name))
        report = m01["outputs"]["reports"][kind]
        assert len(ds) == report["kept"] >= 120  # at least the 20 seeds per language
        assert set(ds["lang"]) == {"en", "zh", "ja", "fr", "ru", "es"}
        assert report["kept"] + sum(report["rejected"].values()) == report["seeds"] + report["generated"]
        assert report["generated"] == 12  # 2 passages per language, one item each
        assert all([m["role"] for m in msgs] == ["user", "assistant"] for msgs in ds["messages"])
    raw_ids = [json.loads(line)["id"] for line in (gen / "raw" / "mc.jsonl").read_text().splitlines()]
    assert len(raw_ids) == len(set(raw_ids)) == 12
    for png in ("rejects.png", "composition.png"):
        assert (gen / png).stat().st_size > 5000

    # 02_translate_ccts: every English source x 5 targets scored; the tiny model's noise is filtered out
    ccts_dir = run / "02_translate_ccts"
    scores = [json.loads(line) for line in (ccts_dir / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 2 * 3 * 5 and {s["target_lang"] for s in scores} == {"zh", "ja", "fr", "ru", "es"}
    # the pre-trained tiny model answers a translation prompt mostly with blank lines (translation_failed) and
    # otherwise with noise; either way nothing passes (threshold changes are re-decided in test_translate.py)
    complete = [s for s in scores if s["reason"] != "translation_failed"]
    assert not any(s["kept"] for s in scores) and all(s["ccts"] < 0.8 for s in complete)
    m02 = json.loads((ccts_dir / "manifest.json").read_text())
    assert m02["outputs"]["threshold"] == 0.8 and m02["outputs"]["kept"] == {"ift": 0, "mc": 0}
    assert len(load_from_disk(str(ccts_dir / "mmed_ift_mc_translated"))) == 0
    for png in ("ccts_histograms.png", "threshold_sweep.png", "ccts_calibration.png"):
        assert (ccts_dir / png).stat().st_size > 5000
    assert sum(m02["outputs"]["reasons"].values()) == len(scores)
    decision = m02["outputs"]["calibration"]["metrics"][-1]
    assert decision["faithful_kept"] >= 0.9 and decision["unfaithful_rejected"] >= 0.85  # on the shipped pairs

    # changing the threshold in the notebook's parameters changes the kept set (no retranslation) and the manifest;
    # with the meaning guard off too, the threshold alone decides, so every complete pair is kept
    import shutil

    first_run_dir = run
    run = tmp_path / "rerun"  # on a copy: the shared course run stays as the course left it
    shutil.copytree(first_run_dir, run)
    ccts_dir = run / "02_translate_ccts"
    proc = subprocess.run(
        [
            str(cli),
            "run",
            "--profile",
            "smoke",
            "--run-dir",
            str(run),
            "--only",
            "2",
            "--no-progress",
            "--set",
            "ccts.threshold=0.0",
            "--set",
            "ccts.check_target_language=false",
            "--set",
            "ccts.meaning_guard=false",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    m02 = json.loads((ccts_dir / "manifest.json").read_text())
    assert m02["outputs"]["threshold"] == 0.0 and m02["this_run"]["translated_now"] == 0
    assert len(m02["outputs"]["kept_ids"]) == len(complete)
    kept_ds = load_from_disk(str(ccts_dir / "mmed_ift_translated"))
    assert len(kept_ds) == sum(s["kind"] == "ift" for s in complete) and set(kept_ds["origin"]) <= {"translated"}

    # 03_stage1_dora / 04_stage2_qlora: DoRA adapter, exact merge, 4-bit QLoRA adapter on the merged model
    run = first_run_dir
    m03 = json.loads((run / "03_stage1_dora" / "manifest.json").read_text())
    assert m03["outputs"]["train"]["global_step"] == SMOKE.stage1.max_steps
    assert m03["outputs"]["train"]["backend"] == ("unsloth" if torch.cuda.is_available() else "peft")
    # the canary: stage 1 learned something that carries over to held-out answers (relied on from outside)
    v0, v1 = m03["outputs"]["validation_loss_base"], m03["outputs"]["validation_loss_final"]
    assert v1 < v0 * (1 - STAGE1_MIN_VALIDATION_DROP), (v0, v1)
    assert set(m03["outputs"]["validation_by_language_final"]) == set(SMOKE.languages)
    assert list((run / "03_stage1_dora" / "train" / "tensorboard").glob("events.out.tfevents.*"))
    pre = json.loads((run / "00_setup" / "manifest.json").read_text())["outputs"]["pretraining"]
    assert pre["steps"] == SMOKE.tiny.pretrain_steps and pre["losses"][-1][1] < pre["losses"][0][1] - 1.0
    assert m03["outputs"]["merge_check"]["max_abs_diff"] < 1e-4
    assert (run / "03_stage1_dora" / "merged" / "model.safetensors").is_file()
    adapter1 = json.loads((run / "03_stage1_dora" / "train" / "adapter" / "adapter_config.json").read_text())
    assert (adapter1["use_dora"], adapter1["r"], adapter1["lora_alpha"]) == (True, 32, 16)
    m04 = json.loads((run / "04_stage2_qlora" / "manifest.json").read_text())
    assert m04["outputs"]["train"]["quantized_layers"] == 7 * SMOKE.tiny.num_hidden_layers
    assert m04["outputs"]["train"]["global_step"] == SMOKE.stage2.max_steps
    assert m04["outputs"]["validation_loss_final"] < m04["outputs"]["validation_loss_base"]
    adapter2 = json.loads((run / "04_stage2_qlora" / "train" / "adapter" / "adapter_config.json").read_text())
    assert (adapter2["use_dora"], adapter2["r"], adapter2["lora_alpha"]) == (False, 16, 8)
    assert m04["inputs"]["stage1_model"]["path"] == str(run / "03_stage1_dora" / "merged")
    for nb in ("03_stage1_dora", "04_stage2_qlora"):
        assert (run / nb / "loss.png").stat().st_size > 5000

    # 05_evaluate: four models x four benchmarks (MMedBench in six languages) x protocols, with intervals
    res = json.loads((run / "05_evaluate" / "results.json").read_text())
    overall = [r for r in res["summary"] if r["lang"] == "all"]
    assert {r["model"] for r in overall} == {"base", "stage1", "stage2", "single_stage"}
    assert {r["benchmark"] for r in overall} == {"medqa", "medmcqa", "pubmedqa", "mmedbench"}
    assert {r["protocol"] for r in overall} == {"loglik", "loglik_norm", "generate"}
    langs = {r["lang"] for r in res["summary"] if r["benchmark"] == "mmedbench"}
    assert langs == {"en", "zh", "ja", "fr", "ru", "es", "all"}
    assert all(r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in res["summary"])
    m05 = json.loads((run / "05_evaluate" / "manifest.json").read_text())
    assert m05["outputs"]["skipped"] == []
    # the canary of stage 2: it taught the answer format (item fields model, protocol, pred: relied on from outside)
    generated = [i for i in res["items"] if i["protocol"] == "generate"]
    rate = {m: sum(bool(i["pred"]) for i in generated if i["model"] == m) / sum(i["model"] == m for i in generated)
            for m in ("base", "stage1", "stage2")}  # fmt: skip
    assert rate == pytest.approx({m: m05["outputs"]["parse_rates"][m] for m in rate})
    assert rate["stage2"] >= STAGE2_MIN_PARSE_RATE and rate["stage2"] > rate["base"] + 0.2, rate
    assert all("unparsed_rate" in r and 0 <= r["unparsed_rate"] <= 1 for r in res["summary"])
    pairs = {(c["model_a"], c["model_b"]) for c in res["comparisons"] if c["lang"] == "all"}
    assert {("stage1", "stage2"), ("stage2", "single_stage")} <= pairs
    assert all(0 <= c["p_value"] <= 1 and c["only_a"] + c["only_b"] <= c["n"] for c in res["comparisons"])
    said = " ".join(m05["outputs"]["comparisons"])  # the notebook states each headline comparison
    assert "stage2 vs single_stage on mmedbench" in said and "exact McNemar p = " in said
    assert (run / "05_evaluate" / "single_stage" / "adapter" / "adapter_config.json").is_file()
    for png in ("mmedbench_by_language.png", "two_vs_single.png"):
        assert (run / "05_evaluate" / png).stat().st_size > 5000

    # 06_ablations: every planned variant, with accuracy per benchmark and language, its paired test against its
    # reference, trainable parameters, wall time and peak memory; nothing of the recipe trained again
    from mmed_helpers.steps.ablations import plan_variants

    abl = json.loads((run / "06_ablations" / "results.json").read_text())
    plan = plan_variants(SMOKE)
    variants = {v["name"]: v for v in abl["variants"]}
    assert list(variants) == [v.name for v in plan] and abl["items"]["n"] == m05["outputs"]["items"]
    per_language = {("mmedbench", lang) for lang in SMOKE.languages}
    for planned in plan:
        v = variants[planned.name]
        cells = {(a["benchmark"], a["lang"]) for a in v["accuracy"] if a["protocol"] == "loglik"}
        assert {("all", "all"), ("medqa", "en"), ("pubmedqa", "all")} | per_language <= cells, planned.name
        assert all(a["ci_low"] <= a["accuracy"] <= a["ci_high"] for a in v["accuracy"])
        assert isinstance(v["trainable_parameters"], int) and v["wall_s"] >= 0 and v["peak_memory_gib"] >= 0
        assert (v["trainable_parameters"] > 0) == (planned.model != "base")
        tests = v["versus_reference"]
        assert (tests == []) == (planned.reference is None)
        if tests:
            assert {("all", "all")} | per_language <= {(t["benchmark"], t["lang"]) for t in tests}
            assert all(t["reference"] == planned.reference and 0 <= t["p_value"] <= 1 for t in tests)
            pooled = next(t for t in tests if (t["benchmark"], t["lang"], t["protocol"]) == ("all", "all", "loglik"))
            assert pooled["n"] == next(a["n"] for a in v["accuracy"] if (a["benchmark"], a["lang"]) == ("all", "all"))
        recipe_tests = v["versus_recipe"]  # and every variant against the recipe itself
        assert (recipe_tests == []) == (planned.name == "recipe")
        if recipe_tests:
            assert all(t["reference"] == "recipe" for t in recipe_tests)
            assert {("all", "all")} | per_language <= {(t["benchmark"], t["lang"]) for t in recipe_tests}
    assert [t["from"][:11] for t in variants["recipe"]["trainings"].values()] == ["notebook 03", "notebook 04"]
    assert variants["stage2_only"]["trainings"]["stage2"]["from"].startswith("notebook 05")
    n = SMOKE.ablations.steps
    ranks = [variants[f"stage1_r{r}_{n}steps"] for r in (8, 16, 32, 64)]
    assert all(v["trainings"]["stage1"]["global_step"] == n for v in ranks)
    assert [v["trainable_parameters"] for v in ranks] == sorted({v["trainable_parameters"] for v in ranks})
    assert variants[f"stage1_english_only_{n}steps"]["data"]["stage1"]["by_language"] == {"en": 20}
    for name in ("ccts_0.7", "ccts_0.9", "ccts_none", "stage1_no_translations"):
        v = variants[name]  # smoke keeps no translation at any threshold: the recipe's data, the recipe's models
        assert all(sum(d.get("kept_translations", {}).values()) == 0 for d in v["data"].values())
        assert all(t["from"].startswith("notebook 03") or t["from"].startswith("notebook 04")
                   for t in v["trainings"].values())  # fmt: skip
    oq1 = abl["open_question_1"]
    assert oq1["this_run"]["hours_ratio"] > 1 and oq1["paper_scale"]["tokens_ratio"] > 100
    m06 = json.loads((run / "06_ablations" / "manifest.json").read_text())
    assert m06["outputs"]["variants"] == list(variants)
    for png in ("accuracy_vs_rank.png", "accuracy_vs_threshold.png", "transfer_by_language.png"):
        assert (run / "06_ablations" / png).stat().st_size > 5000


def _file_hashes(run: Path) -> dict[str, str]:
    import hashlib

    skip = {"notebooks", "run_summary.json"}  # what the runner keeps of each invocation (outputs, wall times)
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.relative_to(run).parts[0] not in skip
    }


@pytest.mark.e2e
def test_a_second_course_run_changes_nothing(smoke_course):
    """Run the whole course again in the same folder (in place: the run records absolute paths, so a copy would
    be another run). Every artifact keeps its bytes, nothing is trained, generated, translated or scored again.
    Runs last: the course's other tests have read the run as the first pass left it."""
    run, _ = smoke_course
    before = _file_hashes(run)
    cli = Path(sys.executable).with_name("mmed-course")
    proc = subprocess.run(
        [str(cli), "run", "--profile", "smoke", "--run-dir", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    after = _file_hashes(run)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], changed
    outputs = {}
    for name in (
        "01_generate_qa",
        "02_translate_ccts",
        "03_stage1_dora",
        "04_stage2_qlora",
        "05_evaluate",
        "06_ablations",
    ):
        nb = nbformat.read(run / "notebooks" / f"{name}.ipynb", as_version=4)
        outputs[name] = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "generated now: 0 outputs" in outputs["01_generate_qa"]
    assert "translated now: 0 texts" in outputs["02_translate_ccts"]
    for name, stage in (("03_stage1_dora", "stage1"), ("04_stage2_qlora", "stage2")):
        assert f"{stage}: reusing the finished run" in outputs[name]
    assert outputs["05_evaluate"].count("kept from an earlier run") == len(SMOKE.evaluation.models)
    assert "single-stage ablation trained" not in outputs["05_evaluate"]
    from mmed_helpers.steps.ablations import plan_variants

    trained = [line for line in outputs["06_ablations"].splitlines() if ": trained now " in line]
    assert len(trained) == len(plan_variants(SMOKE)) and all(": trained now nothing;" in t for t in trained)
    assert "answers: scored now" not in outputs["06_ablations"]
