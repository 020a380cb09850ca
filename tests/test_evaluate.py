"""Evaluation: loaders for the four public formats (with counted, located skips), the two protocols, the
confidence intervals, and agreement with lm-evaluation-harness."""

import json
import math

import pytest
import torch

from mmed_helpers.core.layout import MissingArtifactError, RunLayout
from mmed_helpers.core.mcformat import LETTERS, extract_answers
from mmed_helpers.steps.benchmarks import EvalError, EvalItem, load_benchmark
from mmed_helpers.steps.evaluate import (
    encode_pair,
    evaluate_model,
    loglik_scores,
    model_sources,
    summarize,
    summarize_overall,
    wilson_interval,
)

LANGS = ["en", "zh", "ja", "fr", "ru", "es"]


# --------------------------------------------------------------------------- bundled sets


@pytest.mark.parametrize("bench", ["medqa", "medmcqa", "pubmedqa"])
def test_bundled_english_sets_load_cleanly(bench):
    res = load_benchmark(bench, "bundled")
    assert len(res.items) >= 20 and res.skipped == []
    assert {it.lang for it in res.items} == {"en"}
    assert len({it.id for it in res.items}) == len(res.items)


def test_bundled_mmedbench_has_six_languages_and_multi_answer_items():
    res = load_benchmark("mmedbench", "bundled", languages=LANGS)
    assert res.skipped == []
    per_lang = {lang: [it for it in res.items if it.lang == lang] for lang in LANGS}
    assert all(len(v) >= 20 for v in per_lang.values())
    assert {len(it.options) for it in per_lang["zh"]} == {5}
    assert sum(it.multi for it in per_lang["ja"]) >= 3 and sum(it.multi for it in per_lang["fr"]) >= 3
    assert not any(it.multi for lang in ("en", "ru", "es") for it in per_lang[lang])


def test_eval_items_are_not_training_seeds():
    from mmed_helpers.steps.generate import load_seeds

    seeds = {s.question.strip().casefold() for s in load_seeds("mc", LANGS) + load_seeds("ift", LANGS)}
    for bench in ("medqa", "medmcqa", "pubmedqa", "mmedbench"):
        for it in load_benchmark(bench, "bundled", languages=LANGS).items:
            assert it.question.strip().casefold() not in seeds, it.id


# --------------------------------------------------------------------------- loaders on hub-format files


def _jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    return path


def test_bad_records_are_skipped_and_located(tmp_path):
    good = {"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B", "answer": "b"}
    f = _jsonl(
        tmp_path / "test.jsonl",
        [
            good,
            {**good, "answer_idx": "F"},
            {k: v for k, v in good.items() if k != "question"},
            "{broken json",
            {**good, "options": {"A": "a", "B": "b", "C": "c"}},
            {**good, "question": "Q2?"},
        ],
    )
    res = load_benchmark("medqa", f)
    assert [it.question for it in res.items] == ["Q?", "Q2?"]
    assert [w for w, _ in res.skipped] == ["test.jsonl:2", "test.jsonl:3", "test.jsonl:4", "test.jsonl:5"]
    reasons = dict(res.skipped)
    assert "answer_idx 'F'" in reasons["test.jsonl:2"] and "'question'" in reasons["test.jsonl:3"]
    assert "not valid JSON" in reasons["test.jsonl:4"] and "need 4 options" in reasons["test.jsonl:5"]


def test_medmcqa_pubmedqa_mmedbench_formats(tmp_path):
    mc = _jsonl(
        tmp_path / "validation.jsonl",
        [
            {"id": "x1", "question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 2},
            {"id": "x2", "question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 4},
        ],
    )
    res = load_benchmark("medmcqa", mc)
    assert [(it.id, it.answers) for it in res.items] == [("x1", ["C"])] and "cop must be" in res.skipped[0][1]

    pq = _jsonl(
        tmp_path / "pq.jsonl",
        [
            {
                "pubid": 1,
                "question": "Does X help?",
                "context": {"contexts": ["Bg.", "Res."], "labels": ["B", "R"]},
                "final_decision": "maybe",
            },
            {"pubid": 2, "question": "Does Y help?", "context": {"contexts": ["Bg."]}, "final_decision": "perhaps"},
        ],
    )
    res = load_benchmark("pubmedqa", pq, fold="all")
    item = res.items[0]
    assert (item.options, item.answers, item.context) == (["yes", "no", "maybe"], ["C"], "Bg.\nRes.")
    assert "final_decision" in res.skipped[0][1]

    d = tmp_path / "mmed"
    d.mkdir()
    _jsonl(
        d / "Japanese.jsonl",
        [
            {
                "question": "2つ選べ。",
                "options": {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"},
                "answer_idx": "A,C",
            },
            {"question": "1つ", "options": {"A": "a", "B": "b"}, "answer_idx": "A,A"},
        ],
    )
    res = load_benchmark("mmedbench", d, languages=["ja"])
    assert res.items[0].answers == ["A", "C"] and res.items[0].lang == "ja" and res.items[0].multi
    assert [w for w, _ in res.skipped] == ["Japanese.jsonl:2"]
    with pytest.raises(EvalError, match="mmedbench: no Test/Russian.jsonl under .* for language 'ru'"):
        load_benchmark("mmedbench", d, languages=["ja", "ru"])  # a language that yields nothing is an error


def test_parquet_and_json_list_files(tmp_path):
    import pandas as pd

    records = [
        {"question": f"Q{i}?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "D"} for i in range(3)
    ]
    pd.DataFrame(records).to_parquet(tmp_path / "test.parquet")
    assert len(load_benchmark("medqa", tmp_path / "test.parquet").items) == 3
    (tmp_path / "list.json").write_text(json.dumps(records))
    assert len(load_benchmark("medqa", tmp_path / "list.json").items) == 3


def test_hub_source_offline_and_missing_sources_are_clear(tmp_path):
    with pytest.raises(EvalError, match="needs network access; this run is offline"):
        load_benchmark("medqa", "hub", offline=True)
    with pytest.raises(EvalError, match="not found"):
        load_benchmark("medqa", tmp_path / "nope.jsonl")
    with pytest.raises(EvalError, match="unknown benchmark"):
        load_benchmark("usmle2", "bundled")


# --------------------------------------------------------------------------- answer extraction and statistics


@pytest.mark.parametrize(
    "reply, n, expected",
    [
        ("Answer: B. Right coronary artery", 4, ["B"]),
        ("answer is (c)", 4, ["C"]),
        ("The answer: C", 4, ["C"]),
        ("答案：C", 5, ["C"]),
        ("答え：A、D", 5, ["A", "D"]),
        ("Réponse : A et C", 5, ["A", "C"]),
        ("Respuesta: D", 4, ["D"]),
        ("Ответ: В", 4, ["B"]),  # Cyrillic Ve
        ("(D) because it is", 4, ["D"]),
        ("B. Left anterior", 4, ["B"]),
        ("Ｃ", 4, ["C"]),
        ("Answer: E", 4, []),  # not an option
        ("I am not sure.", 4, []),
        ("Because the ECG shows", 4, []),
    ],
)
def test_extract_answers(reply, n, expected):
    assert extract_answers(reply, n) == expected


def test_wilson_interval():
    lo, hi = wilson_interval(10, 20)
    assert lo == pytest.approx(0.2993, abs=1e-3) and hi == pytest.approx(0.7007, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


# --------------------------------------------------------------------------- log-likelihood protocol


ITEMS = [
    EvalItem("q1", "medqa", "en", "Which artery supplies the inferior wall?", ["RCA", "LAD", "LCx", "LM"], ["A"]),
    EvalItem(
        "q2",
        "pubmedqa",
        "en",
        "Does aspirin reduce events?",
        ["yes", "no", "maybe"],
        ["A"],
        context="A randomised trial of 2000 adults.",
    ),
    EvalItem("q3", "mmedbench", "zh", "哪项正确？", ["甲", "乙", "丙", "丁", "戊"], ["E"]),
]


@pytest.fixture(scope="module")
def tiny_lm(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval(), AutoTokenizer.from_pretrained(tiny_dir)


def test_encode_pair_matches_the_harness_rule(tiny_lm):
    _, tok = tiny_lm
    ctx, cont = encode_pair(tok, "Question: X?\nAnswer: ", "B")
    assert tok.decode(cont) == " B" and ctx[0] == tok.bos_token_id
    assert ctx + cont == tok.encode("Question: X?\nAnswer: B")


def test_fast_path_equals_full_forward_per_choice(tiny_lm):
    model, tok = tiny_lm
    scores = loglik_scores(model, tok, ITEMS, batch_size=2, progress=False)
    for s in scores:
        for j, choice in enumerate(s.item.loglik_choices()):
            ctx, cont = encode_pair(tok, s.item.loglik_context(), choice)
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].float(), -1)
            expected = sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))
            assert s.logliks[j] == pytest.approx(expected, abs=1e-4)
        assert s.pred == LETTERS[max(range(len(s.logliks)), key=s.logliks.__getitem__)]
        if s.item.benchmark != "pubmedqa":
            assert s.pred_norm == s.pred  # single-letter choices: acc_norm == acc


def test_batching_does_not_change_scores(tiny_lm):
    model, tok = tiny_lm
    a = loglik_scores(model, tok, ITEMS, batch_size=1, progress=False)
    b = loglik_scores(model, tok, ITEMS, batch_size=8, progress=False)
    for x, y in zip(a, b, strict=True):
        assert x.logliks == pytest.approx(y.logliks, abs=1e-4)


def test_evaluate_model_both_protocols_and_summary(tiny_lm):
    model, tok = tiny_lm
    multi = EvalItem("m1", "mmedbench", "ja", "2つ選べ。", ["a", "b", "c", "d", "e"], ["A", "C"])
    results = evaluate_model("tiny", model, tok, ITEMS + [multi], batch_size=2, max_new_tokens=4, progress=False)
    protos = {(r.item_id, r.protocol) for r in results}
    assert ("m1", "generate") in protos and ("m1", "loglik") not in protos  # multi-answer: generation only
    assert len([r for r in results if r.protocol == "loglik"]) == 3
    rows = summarize(results)
    for row in rows:
        assert 0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1
        assert row["correct"] == sum(
            r.correct
            for r in results
            if (r.model, r.benchmark, r.lang, r.protocol)
            == (row["model"], row["benchmark"], row["lang"], row["protocol"])
        )
    overall = {(r["benchmark"], r["protocol"]): r["n"] for r in summarize_overall(results)}
    assert overall[("mmedbench", "generate")] == 2


def test_model_sources_name_the_missing_notebook(tmp_path):
    from mmed_helpers.core.config import load_profile
    from mmed_helpers.steps.setup import prepare_base_model

    prepare_base_model(load_profile("smoke"), RunLayout(tmp_path))
    assert model_sources(RunLayout(tmp_path), ["base"])["base"][1] is None
    with pytest.raises(MissingArtifactError, match="run notebook 03_stage1_dora first"):
        model_sources(RunLayout(tmp_path), ["stage2"])
    merged = RunLayout(tmp_path).stage1_merged  # stage 1 done: now stage 2's adapter is what is missing
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    with pytest.raises(MissingArtifactError, match="run notebook 04_stage2_qlora first"):
        model_sources(RunLayout(tmp_path), ["stage2"])
    with pytest.raises(EvalError, match="unknown model 'stage3'"):
        model_sources(RunLayout(tmp_path), ["stage3"])


# --------------------------------------------------------------------------- lm-evaluation-harness agreement


def test_loglik_agrees_with_lm_evaluation_harness(tiny_dir, tiny_lm, tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    model, tok = tiny_lm
    items = load_benchmark("medqa", "bundled").items[:6] + load_benchmark("mmedbench", "bundled", ["ru"]).items[:4]
    data = tmp_path / "items.jsonl"
    _jsonl(
        data,
        [
            {"prompt": it.loglik_context(), "choices": list(it.letters), "target": it.letters.index(it.answers[0])}
            for it in items
        ],
    )
    (tmp_path / "task.yaml").write_text(
        "task: mmed_course_check\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{prompt}}'\ndoc_to_choice: choices\ndoc_to_target: target\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_dir},dtype=float32",
        tasks=["mmed_course_check"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        batch_size=1,
        log_samples=True,
        device="cpu",
    )
    samples = sorted(out["samples"]["mmed_course_check"], key=lambda s: s["doc_id"])
    ours = loglik_scores(model, tok, items, batch_size=4, progress=False)
    for s, mine in zip(samples, ours, strict=True):
        theirs = [float(r[0]) for r in s["filtered_resps"]]
        assert mine.logliks == pytest.approx(theirs, abs=1e-4)
    acc = sum(m.pred == m.item.answers[0] for m in ours) / len(ours)
    assert math.isclose(out["results"]["mmed_course_check"]["acc,none"], acc)


# --------------------------------------------------------------------------- replies as models write them


def test_answer_extraction_on_a_catalogue_of_real_replies():
    """At least 80 replies written the way instruction-tuned models answer, in all six languages, with the
    letter sets a reader would take from them (``[]``: no answer, e.g. an English article or "B12")."""
    from conftest import ROOT

    rows = [json.loads(line) for line in (ROOT / "tests" / "data" / "answer_replies.jsonl").read_text().splitlines()]
    assert len(rows) >= 80 and all(sum(r["lang"] == lang for r in rows) >= 8 for lang in LANGS)
    wrong = [(r["reply"], extract_answers(r["reply"], r["n"]), r["expected"]) for r in rows]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert len(wrong) <= 0.05 * len(rows), wrong


def test_exact_mcnemar_equals_the_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    from mmed_helpers.steps.evaluate import mcnemar_exact

    for only_a, only_b in [(0, 0), (3, 0), (10, 4), (4, 10), (25, 12), (1, 1), (40, 41)]:
        n = only_a + only_b
        expected = 1.0 if n == 0 else stats.binomtest(min(only_a, only_b), n, 0.5).pvalue
        assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_paired_comparison_counts_the_discordant_items():
    from mmed_helpers.steps.evaluate import ItemResult, compare_models, describe_comparison

    def res(model, i, correct, lang="en"):
        return ItemResult(model, "mmedbench", lang, "loglik", f"i{i}", ["A"], ["A" if correct else "B"], correct)

    a = [res("stage2", i, i < 15) for i in range(20)]  # 15/20
    b = [res("single_stage", i, i < 5 or i >= 18) for i in range(20)]  # 7/20: 10 only stage2, 2 only single
    rows = compare_models(a + b, ["stage2", "single_stage"])
    row = next(r for r in rows if r["lang"] == "en")
    assert (row["n"], row["only_a"], row["only_b"]) == (20, 10, 2)
    assert (row["accuracy_a"], row["accuracy_b"]) == (0.75, 0.35)
    assert row["p_value"] == pytest.approx(0.0385742, abs=1e-6)  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    assert {r["lang"] for r in rows} == {"en", "all"}
    text = describe_comparison(row)
    assert "stage2 is better at the 5% level" in text and "p = 0.0386" in text


def test_summary_counts_unreadable_replies(tiny_lm):
    from mmed_helpers.steps.evaluate import ItemResult

    results = [
        ItemResult("m", "medqa", "en", "generate", "1", ["A"], [], False, "I am not sure"),
        ItemResult("m", "medqa", "en", "generate", "2", ["A"], ["A"], True, "Answer: A"),
        ItemResult("m", "medqa", "en", "generate", "3", ["A"], ["B"], False, "Answer: B"),
    ]
    (row,) = summarize(results)
    assert (row["unparsed"], row["unparsed_rate"], row["correct"]) == (1, pytest.approx(1 / 3), 1)


def test_only_the_needed_logits_are_computed(tiny_lm):
    """Scoring asks the model for the continuation positions only; the values equal the full forward's."""
    from mmed_helpers.steps.evaluate import _logits_at

    model, tok = tiny_lm
    ids = torch.tensor([tok.encode("Question: Which artery?\nAnswer: A")])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        some = _logits_at(model, ids, mask, [3, ids.shape[1] - 1])
        full = model(input_ids=ids, attention_mask=mask).logits
    assert some.shape == (1, 2, full.shape[-1])
    assert torch.allclose(some[0], full[0, [3, ids.shape[1] - 1]], atol=1e-5)


def test_a_rerun_reuses_scores_only_for_the_same_model_items_and_settings(tiny_dir, tmp_path):
    import os
    import shutil

    from mmed_helpers.steps.evaluate import evaluate_or_reuse

    store = RunLayout(tmp_path / "run").eval_model_results("base")
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    kw = dict(dtype="float32", batch_size=2, max_new_tokens=4, progress=False)
    first, reused = evaluate_or_reuse("base", model_dir, None, ITEMS, ["loglik", "generate"], store, **kw)
    assert not reused and store.is_file() and len(first) == 9  # 3 items x loglik, loglik_norm, generate
    before = store.stat().st_mtime_ns

    # a planted mark in the stored answers comes back: the rerun read them instead of scoring again
    saved = json.loads(store.read_text())
    saved["results"][0]["raw"] = "PLANTED"
    store.write_text(json.dumps(saved))
    again, reused = evaluate_or_reuse("base", model_dir, None, ITEMS, ["loglik", "generate"], store, **kw)
    assert reused and again[0].raw == "PLANTED" and again[1:] == first[1:]
    assert store.stat().st_mtime_ns >= before

    changed = [
        dict(items=ITEMS[:2]),  # other items
        dict(protocols=["loglik"]),  # other protocols
        dict(max_new_tokens=5),  # other generation settings
    ]
    for change in changed:
        args = {"items": ITEMS, "protocols": ["loglik", "generate"], **kw, **change}
        fresh, reused = evaluate_or_reuse(name="base", model_dir=model_dir, adapter=None, store=store, **args)
        assert not reused and all(r.raw != "PLANTED" for r in fresh), change
    # weights rewritten in place (new mtime) are another model
    evaluate_or_reuse("base", model_dir, None, ITEMS, ["loglik", "generate"], store, **kw)
    weights = next(model_dir.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    _, reused = evaluate_or_reuse("base", model_dir, None, ITEMS, ["loglik", "generate"], store, **kw)
    assert not reused
