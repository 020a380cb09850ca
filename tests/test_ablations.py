"""Notebook 06's ablations: the grid each profile declares, the CCTS re-filter, the paired comparison, the Open
Question 1 arithmetic, and that a variant reuses the recipe's models and its own finished runs."""

import json
import math

import pytest

from mmed_helpers.core.config import load_profile
from mmed_helpers.core.layout import RunLayout
from mmed_helpers.steps import ablations
from mmed_helpers.steps.ablations import (
    RECIPE,
    AblationError,
    Context,
    Throughput,
    Training,
    Variant,
    continual_pretraining_comparison,
    kept_counts,
    paper_scale_stages,
    plan_variants,
    run_variant,
    versus_reference,
)
from mmed_helpers.steps.evaluate import ItemResult

ALL_STUDIES = {"ablations.studies": ["stages", "rank", "ccts", "transfer"]}

# --------------------------------------------------------------------------- the grid


def _by_name(plan):
    return {v.name: v for v in plan}


def test_the_smoke_grid_runs_every_study_at_matched_steps():
    cfg = load_profile("smoke")
    plan = _by_name(plan_variants(cfg))
    n = cfg.ablations.steps
    assert n > 0
    assert {
        "recipe", "base", "stage1", "stage2_only", "stage1_no_translations", "ccts_0.7", "ccts_0.9", "ccts_none",
        f"stage1_english_only_{n}steps",
        *(f"stage1_r{r}_{n}steps" for r in (8, 16, 32, 64)),
        *(f"stage2_r{r}_{n}steps" for r in (8, 16, 32)),
    } == set(plan)  # fmt: skip
    assert plan[RECIPE].reference is None and plan[RECIPE].studies == tuple(cfg.ablations.studies)
    for v in plan.values():
        assert v.reference is None or v.reference in plan, v.name  # every reference is run too
        if v.name.endswith("steps"):  # matched: the variant and its reference train the same steps
            assert all(t.config(cfg).max_steps == n for t in v.trainings() if t.overrides)
            ref = plan[v.reference]
            assert ref.name.endswith("steps") or ref.name in ("stage1", RECIPE)
        for t in v.trainings():  # alpha = r/2 as the paper's 32/16 and 16/8
            c = t.config(cfg)
            assert c.lora_alpha * 2 == c.r
    assert plan[f"stage1_r8_{n}steps"].reference == f"stage1_r32_{n}steps"
    assert plan[f"stage1_r32_{n}steps"].reference == "stage1" and plan["stage1"].reference == RECIPE
    assert plan[f"stage2_r8_{n}steps"].reference == f"stage2_r16_{n}steps"
    assert plan[f"stage1_english_only_{n}steps"].stage1.data == "english_only"
    assert set(plan[f"stage1_r32_{n}steps"].studies) == {"rank", "transfer"}  # shared, listed once
    assert plan["ccts_none"].stage1.threshold is None and plan["ccts_0.7"].stage2.threshold == 0.7


def test_at_the_stages_own_steps_the_recipe_is_the_reference():
    plan = _by_name(plan_variants(load_profile("smoke", {**ALL_STUDIES, "ablations.steps": 0})))
    assert not [n for n in plan if n.endswith("steps")]
    assert plan["stage1_r8"].reference == "stage1" and plan["stage2_r8"].reference == RECIPE
    assert "stage1_r32" not in plan and "stage2_r16" not in plan  # those are the recipe's own models
    assert plan["stage1_english_only"].reference == "stage1"


@pytest.mark.parametrize("name", ["colab", "full"])
def test_gpu_profiles_run_a_subset_at_their_own_steps(name):
    cfg = load_profile(name)
    plan = _by_name(plan_variants(cfg))
    assert RECIPE in plan and "base" in plan and "stage2_only" in plan
    assert all(t.config(cfg).max_steps == getattr(cfg, t.stage).max_steps for v in plan.values() for t in v.trainings())
    studies = {s for v in plan.values() for s in v.studies}
    assert studies == set(cfg.ablations.studies)


def test_no_study_plans_nothing():
    assert plan_variants(load_profile("smoke", {"ablations.studies": []})) == []


def test_the_modules_examples_hold():
    import doctest

    from mmed_helpers.steps import translate

    assert doctest.testmod(ablations, extraglobs={"load_profile": load_profile}).failed == 0
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(translate.kept_at, globs={"kept_at": translate.kept_at}):
        runner.run(test)
    assert runner.tries == 1 and runner.failures == 0


# --------------------------------------------------------------------------- the CCTS re-filter


def _write_run(root, tiny_dir=None):
    """A run folder with notebook 01's datasets (two English sources of each kind), notebook 02's scores and
    stored translations of them into zh and ja, and (with ``tiny_dir``) the base model record."""
    from mmed_helpers.core.modeldir import BaseModelInfo
    from mmed_helpers.core.records import IFTSample, MCItem, records_dataset, save_dataset, to_dataset
    from mmed_helpers.steps.translate import SCORE_COLUMNS, sample_fields

    run = RunLayout(root)
    if tiny_dir is not None:
        run.write_base_model(BaseModelInfo("tiny", str(tiny_dir), "tiny"))
    ift = [IFTSample(f"ift-{lang}-{i}", lang, f"Question {i} in {lang}: what lowers blood pressure?",
                     f"Answer {i}: thiazide diuretics and ACE inhibitors lower it.", origin="seed")
           for lang in ("en", "zh") for i in range(5)]  # fmt: skip
    mc = [MCItem(f"mc-{lang}-{i}", lang, f"Which drug {i} treats hypertension?", ["Lisinopril", "Insulin", "Heparin",
                 "Aspirin"], "A", "Lisinopril is an ACE inhibitor.", origin="seed")
          for lang in ("en", "zh") for i in range(5)]  # fmt: skip
    save_dataset(to_dataset(ift, "ift"), run.ift)
    save_dataset(to_dataset(mc, "mc"), run.mc)
    for path, kind in ((run.ift_translated, "ift"), (run.mc_translated, "mc")):
        save_dataset(records_dataset([], kind, SCORE_COLUMNS), path)
    # (kind, source, target, ccts, reason): what notebook 02 decided at 0.8
    decided = [
        ("ift", ift[0], "zh", 0.95, "kept"),
        ("ift", ift[0], "ja", 0.85, "kept"),
        ("ift", ift[1], "zh", 0.75, "below_threshold"),
        ("ift", ift[1], "ja", 0.65, "below_threshold"),
        ("ift", ift[2], "zh", 0.99, "meaning_changed"),  # any threshold: the guard decided
        ("ift", ift[2], "ja", 0.90, "wrong_target_language"),
        ("mc", mc[0], "zh", 0.80, "kept"),  # exactly at the threshold: kept
        ("mc", mc[0], "ja", None, "translation_failed"),
        ("mc", mc[1], "zh", 0.70, "below_threshold"),  # exactly at 0.7
        ("mc", mc[1], "ja", 0.92, "benchmark_overlap"),
    ]
    scores, forward, backward = [], [], []
    for kind, src, tgt, ccts, reason in decided:
        failed = reason == "translation_failed"
        for name in sample_fields(src):
            jid = f"{src.id}|{tgt}|{name}"
            forward.append({"id": jid, "output": "" if failed else f"[{tgt}] {name} of {src.id}", "error": None})
            backward.append({"id": jid, "output": "" if failed else f"back {name}", "error": None})
        scores.append({"id": f"{src.id}|{tgt}", "kind": kind, "source_id": src.id, "target_lang": tgt,
                       "bleu": ccts, "bertscore": ccts, "ccts": ccts, "kept": reason == "kept", "reason": reason,
                       "detail": "", "source_text": "", "translation": "" if failed else "text",
                       "back_translation": ""})  # fmt: skip
    run.ccts_scores.parent.mkdir(parents=True, exist_ok=True)
    run.ccts_scores.write_text("".join(json.dumps(s) + "\n" for s in scores), encoding="utf-8")
    for direction, rows in (("forward", forward), ("backward", backward)):
        path = run.translation_store(direction)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return run, scores


@pytest.mark.parametrize(
    "threshold, kept",
    [
        (0.8, {"ift-en-0|zh", "ift-en-0|ja", "mc-en-0|zh"}),  # notebook 02's own decision
        (0.9, {"ift-en-0|zh"}),
        (0.7, {"ift-en-0|zh", "ift-en-0|ja", "ift-en-1|zh", "mc-en-0|zh", "mc-en-1|zh"}),
        (0.0, {"ift-en-0|zh", "ift-en-0|ja", "ift-en-1|zh", "ift-en-1|ja", "mc-en-0|zh", "mc-en-1|zh"}),
        # no filter: every complete translation, unchecked, except the one that reproduces a benchmark item
        (None, {"ift-en-0|zh", "ift-en-0|ja", "ift-en-1|zh", "ift-en-1|ja", "ift-en-2|zh", "ift-en-2|ja",
                "mc-en-0|zh", "mc-en-1|zh"}),
    ],
)  # fmt: skip
def test_a_threshold_keeps_exactly_the_translations_at_or_above_it(tmp_path, threshold, kept):
    from mmed_helpers.steps.translate import refilter

    run, scores = _write_run(tmp_path / "run")
    result = refilter(run, threshold)
    assert result.ids() == kept
    if threshold is not None:  # the same, computed the plain way from the scores written above
        by_hand = {s["id"] for s in scores if s["reason"] in ("kept", "below_threshold") and s["ccts"] >= threshold}
        assert result.ids() == by_hand
    # the records are the stored translations, rebuilt as notebook 02 saves them
    for kind, records in result.kept.items():
        for rec, row in zip(records, result.scores[kind], strict=True):
            assert rec.id == row["id"] and rec.origin == "translated" and rec.lang == row["target_lang"]
            assert rec.question == f"[{rec.lang}] question of {row['source_id']}"


def test_a_pair_the_lower_threshold_admits_is_checked_against_the_benchmarks(tmp_path):
    from mmed_helpers.core.decontam import BenchmarkIndex
    from mmed_helpers.steps.translate import refilter

    run, _ = _write_run(tmp_path / "run")
    # a benchmark item that one newly admitted translation reproduces word for word
    text = "[zh] answer of ift-en-1"
    index = BenchmarkIndex.build([("medqa", "q1", text + " and more words to pass the n-gram size", True)], n=3)
    result = refilter(run, 0.7, index)
    assert "ift-en-1|zh" not in result.ids() and result.overlapping == 1
    assert "ift-en-0|zh" in result.ids()  # kept by notebook 02 (its check passed there)


def test_kept_counts_per_threshold_and_language(tmp_path):
    run, _ = _write_run(tmp_path / "run")
    ctx = Context(load_profile("smoke"), run, [], [])
    rows = {
        (r["threshold"], r["kind"], r["lang"]): (r["kept"], r["round trips"])
        for r in kept_counts(ctx, [0.7, 0.9, None])
    }
    assert rows[("0.7", "ift", "zh")] == (2, 3) and rows[("0.7", "ift", "ja")] == (1, 3)
    assert rows[("0.9", "ift", "zh")] == (1, 3) and rows[("0.9", "mc", "zh")] == (0, 2)
    assert rows[("none", "ift", "ja")] == (3, 3) and rows[("none", "mc", "ja")] == (0, 2)


# --------------------------------------------------------------------------- paired comparisons


def _results(model, correct_by_item, bench="mmedbench", lang="zh"):
    return [ItemResult(model, bench, lang, "loglik", f"q{i}", ["A"], ["A" if ok else "B"], ok)
            for i, ok in enumerate(correct_by_item)]  # fmt: skip


def test_the_paired_test_equals_a_hand_computed_mcnemar():
    # 12 items: both right on 3, only the variant on 6, only the reference on 1, both wrong on 2
    variant = [True] * 3 + [True] * 6 + [False] * 1 + [False] * 2
    reference = [True] * 3 + [False] * 6 + [True] * 1 + [False] * 2
    rows = versus_reference("v", _results("x", variant), "ref", _results("y", reference))
    row = next(r for r in rows if (r["benchmark"], r["lang"]) == ("mmedbench", "zh"))
    assert (row["n"], row["only_variant"], row["only_reference"]) == (12, 6, 1)
    assert row["accuracy"] == 9 / 12 and row["reference_accuracy"] == 4 / 12 and row["reference"] == "ref"
    # two-sided exact McNemar: 2 * P(X <= 1), X ~ Binomial(7, 1/2) = 2 * (1 + 7) / 128
    assert row["p_value"] == pytest.approx(2 * (math.comb(7, 0) + math.comb(7, 1)) / 2**7) == 0.125
    pooled = {(r["benchmark"], r["lang"]) for r in rows}
    assert {("mmedbench", "all"), ("all", "zh"), ("all", "all")} <= pooled


def test_a_variant_scored_on_other_items_is_refused():
    ref = _results("ref", [True, False, True, False])
    other = _results("v", [True, False, True]) + _results("v", [True], lang="ja")  # one item swapped
    with pytest.raises(AblationError, match="'v' was scored on 4 answers .* 'ref' on 4, 2 of them not shared"):
        versus_reference("v", other, "ref", ref)
    with pytest.raises(AblationError, match="same items"):
        versus_reference("v", _results("v", [True, False, True]), "ref", ref)  # one item missing


def test_every_variant_is_also_tested_against_the_recipe():
    """``comparisons`` pairs each variant with its own (matched) reference; with ``against=RECIPE`` every other
    variant with the recipe, whatever its reference, and never the recipe with itself."""
    from mmed_helpers.steps.ablations import Outcome, comparisons, results_table

    answers = {RECIPE: [True, False, True, False, True], "a": [True, True, True, False, False],
               "b": [False, True, False, True, True]}  # fmt: skip
    refs = {RECIPE: None, "a": RECIPE, "b": "a"}
    outcomes = {
        n: Outcome(Variant(n, ("rank",), "", "stage1", reference=refs[n]), _results(n, ok), {}, {})
        for n, ok in answers.items()
    }
    own, recipe = comparisons(outcomes), comparisons(outcomes, against=RECIPE)
    assert set(own) == {"a", "b"} and set(recipe) == {"a", "b"}
    assert {r["reference"] for r in own["b"]} == {"a"} and {r["reference"] for r in recipe["b"]} == {RECIPE}
    assert recipe["b"] == versus_reference("b", outcomes["b"].results, RECIPE, outcomes[RECIPE].results)
    assert recipe["a"] == own["a"]  # its own reference is the recipe
    pooled = next(r for r in recipe["b"] if (r["benchmark"], r["lang"]) == ("all", "all"))
    assert (pooled["only_variant"], pooled["only_reference"]) == (2, 2)  # items 1, 3 against items 0, 2
    table = {r["variant"]: r for r in results_table(outcomes, own, "loglik", recipe)}
    assert table["b"]["compared with"] == "a" and table["b"]["p vs recipe"] == pooled["p_value"]
    assert table["a"]["p vs recipe"] is None and table["a"]["p (McNemar)"] is not None  # said once, not twice


# --------------------------------------------------------------------------- Open Question 1


def test_open_question_1_arithmetic():
    stages = [Throughput("stage1", 3.6e6, 1800), Throughput("stage2", 7.2e6, 3600)]  # 2,000 tokens/s each
    r = continual_pretraining_comparison(stages, corpus_tokens=7.2e9, full_training_cost=1.5)
    assert r["two_stages"] == {"tokens": 1.08e7, "hours": 1.5}
    cpt = r["continual_pretraining"]
    assert cpt["tokens_per_second"] == pytest.approx(2000 / 1.5)
    assert cpt["hours"] == pytest.approx(7.2e9 / (2000 / 1.5) / 3600) == pytest.approx(1500)
    assert r["tokens_ratio"] == pytest.approx(7.2e9 / 1.08e7) and r["hours_ratio"] == pytest.approx(1000)
    with pytest.raises(AblationError):
        continual_pretraining_comparison([Throughput("stage1", 0, 10)])


def test_the_paper_scale_assumptions():
    full = load_profile("full")
    s1, s2 = paper_scale_stages(full, samples=200_000, tokens_per_sample=400, ift_share=0.5)
    assert s1.tokens == 200_000 * 0.5 * 400 * full.stage1.num_train_epochs == 4e7
    assert s2.tokens == 200_000 * 0.5 * 400 * full.stage2.num_train_epochs == 8e7
    assert s1.tokens_per_second == pytest.approx(5550) and s2.tokens_per_second == pytest.approx(4775)
    r = continual_pretraining_comparison([s1, s2])
    assert r["continual_pretraining"]["hours"] == pytest.approx(25.5e9 / (5550 / 1.5) / 3600)  # about 1,914 h


# --------------------------------------------------------------------------- running variants


@pytest.fixture(scope="module")
def tiny_run(tiny_dir, tmp_path_factory):
    """A run with the recipe's stage 1 trained (2 steps) and merged on the tiny model, and three MedQA items."""
    from mmed_helpers.steps.benchmarks import load_benchmark
    from mmed_helpers.steps.train import merge_adapter, train_stage

    run, _ = _write_run(tmp_path_factory.mktemp("abl") / "run", tiny_dir)
    cfg = load_profile(
        "smoke",
        {"stage1.max_steps": 2, "stage1.report_to": "none", "stage1.eval_steps": 10, "stage1.r": 8,
         "stage1.lora_alpha": 4, "ablations.protocols": ["loglik"]},
    )  # fmt: skip
    result = train_stage("stage1", cfg.stage1, tiny_dir, run.training_data("stage1"), run.stage1_train, cfg.model,
                         seed=cfg.seed, progress=False, profile=cfg.name)  # fmt: skip
    merge_adapter(tiny_dir, result.adapter_dir, run.stage1_merged, dtype="float32")
    items = load_benchmark("medqa", "bundled").items[:3]
    return cfg, run, items


def test_a_variant_with_the_recipes_data_reuses_its_model(tiny_run):
    cfg, run, items = tiny_run
    ctx = Context(cfg, run, items, items)
    v = Variant("stage1_no_translations", ("stages",), "", "stage1", Training("stage1", data="no_translations"))
    out = run_variant(v, ctx, progress=False)
    assert out.trained_now == [] and out.trainings["stage1"]["from"].startswith("notebook 03")
    assert not run.variant(v.name).stage1.root.exists()  # nothing trained in the variant's folder
    assert {r.model for r in out.results} == {v.name} and len(out.results) == 2 * len(items)  # loglik, loglik_norm


def test_a_second_run_variant_trains_and_scores_nothing(tiny_run):
    cfg, run, items = tiny_run
    ctx = Context(cfg, run, items, items)
    over = (("r", 4), ("lora_alpha", 2), ("max_steps", 2))
    v = Variant("stage1_r4_2steps", ("rank",), "", "stage1", Training("stage1", over, "english_only"))
    first = run_variant(v, ctx, progress=False)
    vdir = run.variant(v.name)
    assert first.trained_now == ["stage1"] and first.scored == "scored now"
    assert first.trainings["stage1"]["global_step"] == 2 and first.trainings["stage1"]["from"] == "this variant"
    assert first.data["stage1"]["by_language"] == {"en": 5}  # the English records only, written in its folder
    assert (vdir.dataset(run.ift) / "dataset_info.json").is_file()
    files = {p: p.read_bytes() for p in vdir.root.rglob("*") if p.is_file()}
    again = run_variant(v, Context(cfg, run, items, items), progress=False)
    assert again.trained_now == [] and again.scored == "kept from an earlier run"
    assert [(r.item_id, r.pred) for r in again.results] == [(r.item_id, r.pred) for r in first.results]
    assert {p: p.read_bytes() for p in vdir.root.rglob("*") if p.is_file()} == files  # not a byte rewritten
    assert versus_reference(v.name, again.results, "stage1", first.results)  # same items: comparable


# --------------------------------------------------------------------------- the notebook's exercise check


def test_the_rank_exercise_check_agrees_with_peft(tiny_dir):
    """Exercise 1 of notebook 06: the check's truth is PEFT's own count of a rank-64 DoRA adapter minus a rank-32
    one; the whole adapter and a difference that keeps the magnitudes get their hints."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mmed_helpers.core.config import StageConfig
    from mmed_helpers.exercises import check_rank_parameters

    def trainable(r):
        model = AutoModelForCausalLM.from_pretrained(tiny_dir)
        cfg = LoraConfig(r=r, lora_alpha=r // 2, target_modules=StageConfig().target_modules, use_dora=True)
        peft = get_peft_model(model, cfg)
        return sum(p.numel() for p in peft.parameters() if p.requires_grad)

    want = trainable(64) - trainable(32)
    assert check_rank_parameters(want, tiny_dir) and check_rank_parameters(f"{want:,}", tiny_dir)
    assert "whole rank-64 adapter" in str(check_rank_parameters(trainable(64), tiny_dir))
    assert not check_rank_parameters(want + 1, tiny_dir)
    assert not check_rank_parameters(None, tiny_dir)


@pytest.mark.parametrize("threshold", [0.0, 0.8, 0.9])
def test_a_refilter_keeps_what_notebook_02_keeps_at_that_threshold(tmp_path, threshold):
    """The peer is notebook 02's own filter: its expansion run at ``threshold`` (the real cycle, scorer, meaning
    guard and saving) keeps exactly the records, scores included, that re-filtering a run made at 0.8 keeps. At
    0.0 that adds a pair notebook 02 had left below 0.8, and still none the meaning guard rejected."""
    from datasets import load_from_disk
    from test_translate import TaggingTranslator, _items

    from mmed_helpers.core.records import save_dataset, to_dataset
    from mmed_helpers.steps.ccts import CCTSScorer
    from mmed_helpers.steps.translate import SCORE_COLUMNS, refilter, run_expansion

    def expand(root, t):
        over = {"languages": ["en", "fr", "ja"], "ccts.max_source_samples": 3, "ccts.check_target_language": False}
        run = RunLayout(root)
        for kind, items in _items().items():
            save_dataset(to_dataset(items, kind), getattr(run, kind))
        cfg = load_profile("smoke", {**over, "ccts.threshold": t})
        run_expansion(cfg, run, TaggingTranslator(lossy={"ja"}), CCTSScorer(batch_size=8), _items(), progress=False)
        return run

    again = refilter(expand(tmp_path / "at_0.8", 0.8), threshold)
    direct = expand(tmp_path / "direct", threshold)
    for kind, path in (("ift", direct.ift_translated), ("mc", direct.mc_translated)):
        saved = sorted(load_from_disk(str(path)).to_list(), key=lambda r: r["id"])
        mine = sorted(again.records(kind), key=lambda r: r["id"])
        assert [r["id"] for r in mine] == [r["id"] for r in saved]
        for a, b in zip(mine, saved, strict=True):
            assert {k: v for k, v in a.items() if k not in SCORE_COLUMNS} == {
                k: v for k, v in b.items() if k not in SCORE_COLUMNS
            }
            assert [a[c] for c in SCORE_COLUMNS] == pytest.approx([b[c] for c in SCORE_COLUMNS], abs=1e-6)
    assert ("m0|ja" in again.ids()) == (threshold < 0.16)  # its CCTS is about 0.16
    assert not {"i0|ja", "i1|ja", "i2|ja"} & again.ids()  # the guard's decisions hold at every threshold
