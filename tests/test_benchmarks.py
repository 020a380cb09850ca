"""The benchmarks as they are really distributed (MMedBench's zip on the Hub, unzipped roots, field variants,
PubMedQA's test fold), and lm-evaluation-harness's own built-in task definitions run against ours."""

import json
import math
import shutil
import zipfile
from pathlib import Path

import pytest

from mmed_helpers.core.languages import TABLE
from mmed_helpers.core.layout import EVAL_DIR
from mmed_helpers.steps.benchmarks import (
    HARNESS_TASKS,
    EvalError,
    load_benchmark,
    pubmedqa_test_fold,
    select_items,
)

LANGS = ["en", "zh", "ja", "fr", "ru", "es"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _bundled(lang: str) -> list[dict]:
    path = EVAL_DIR / "mmedbench" / f"{TABLE[lang].mmedbench_file}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _mmedbench_zip(path: Path, langs=LANGS) -> Path:
    """``MMedBench.zip`` laid out as on the Hub: ``MMedBench/Test/<Language>.jsonl`` and ``.../Train/...``; the
    train files hold the test items in reverse with a marker, so a wrong split is visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("MMedBench/", "")
        for lang in langs:
            name = TABLE[lang].mmedbench_file
            test = _bundled(lang)
            train = [{**r, "question": "[train] " + r["question"]} for r in reversed(test)]
            zf.writestr(f"MMedBench/Test/{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test))
            zf.writestr(
                f"MMedBench/Train/{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train)
            )
    return path


def _hub_cache(cache: Path) -> Path:
    """A Hugging Face cache holding the dataset repo ``Henrychur/MMedBench`` as huggingface_hub lays it out."""
    repo = cache / "datasets--Henrychur--MMedBench"
    snap = repo / "snapshots" / COMMIT
    _mmedbench_zip(snap / "MMedBench.zip")
    (snap / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# MMedBench\n")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def _gold(result) -> dict[str, list[tuple[str, list[str]]]]:
    out: dict[str, list] = {}
    for it in result.items:
        out.setdefault(it.lang, []).append((it.question, it.answers))
    return out


# --------------------------------------------------------------------------- MMedBench as distributed


def test_mmedbench_from_the_hub_cache_reads_the_test_split(tmp_path):
    cache = _hub_cache(tmp_path / "hub")
    res = load_benchmark("mmedbench", "hub", languages=LANGS, offline=True, cache_dir=cache)
    bundled = load_benchmark("mmedbench", "bundled", languages=LANGS)
    assert _gold(res) == _gold(bundled) and res.skipped == []
    ja = [it for it in res.items if it.lang == "ja"]
    assert any(it.answers == ["A", "C"] or len(it.answers) > 1 for it in ja)  # multi-answer keys kept
    train = load_benchmark("mmedbench", "hub", languages=["fr"], offline=True, cache_dir=cache, split="train")
    assert all(it.question.startswith("[train] ") for it in train.items)


def test_mmedbench_zip_unzipped_root_and_single_file(tmp_path):
    z = _mmedbench_zip(tmp_path / "dl" / "MMedBench.zip")
    want = _gold(load_benchmark("mmedbench", "bundled", languages=["ja", "ru"]))
    assert _gold(load_benchmark("mmedbench", z, languages=["ja", "ru"])) == want
    root = tmp_path / "data" / "medical" / "unzipped"
    with zipfile.ZipFile(z) as zf:
        zf.extractall(root)
    assert _gold(load_benchmark("mmedbench", tmp_path / "data", languages=["ja", "ru"])) == want  # any depth
    assert _gold(load_benchmark("mmedbench", z.parent, languages=["ja", "ru"])) == want  # a folder with the zip
    single = root / "MMedBench" / "Test" / "Japanese.jsonl"
    assert _gold(load_benchmark("mmedbench", single, languages=["ja"]))["ja"] == want["ja"]
    with pytest.raises(EvalError, match="is not the Russian file"):
        load_benchmark("mmedbench", single, languages=["ja", "ru"])


def test_mmedbench_missing_language_is_one_clear_error(tmp_path):
    z = _mmedbench_zip(tmp_path / "MMedBench.zip", langs=["en", "ja"])
    with pytest.raises(EvalError, match=r"holds no Test/Spanish.jsonl \(for language 'es'\)") as err:
        load_benchmark("mmedbench", z, languages=["en", "es"])
    assert "\n" not in str(err.value)
    with pytest.raises(EvalError, match="offline and Henrychur/MMedBench/MMedBench.zip is not in the local"):
        load_benchmark("mmedbench", "hub", languages=["en"], offline=True, cache_dir=tmp_path / "empty")


def test_mmedbench_answer_idx_as_string_or_list(tmp_path):
    opts = {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"}
    f = _jsonl(
        tmp_path / "Test" / "French.jsonl",
        [
            {"question": "Q1", "options": opts, "answer_idx": "A,C"},
            {"question": "Q2", "options": opts, "answer_idx": "BD"},
            {"question": "Q3", "options": opts, "answer_idx": ["E", "A"]},
            {"question": "Q4", "options": opts, "answer_idx": ["F"]},
        ],
    )
    res = load_benchmark("mmedbench", tmp_path, languages=["fr"])
    assert [it.answers for it in res.items] == [["A", "C"], ["B", "D"], ["A", "E"]]
    assert res.skipped[0][0] == f"{f.name}:4"


# --------------------------------------------------------------------------- field variants and folds


def test_medqa_hf_variant_reads_like_the_options_variant(tmp_path):
    plain = load_benchmark("medqa", "bundled").items
    hf = [
        {
            "id": it.id,
            "sent1": it.question,
            "sent2": "",
            **{f"ending{i}": o for i, o in enumerate(it.options)},
            "label": "ABCD".index(it.answers[0]),
        }
        for it in plain
    ]
    res = load_benchmark("medqa", _jsonl(tmp_path / "test.jsonl", hf))
    assert [(i.question, i.options, i.answers) for i in res.items] == [
        (i.question, i.options, i.answers) for i in plain
    ]


def test_pubmedqa_test_fold_and_the_original_json(tmp_path):
    fold = sorted(pubmedqa_test_fold(), key=int)
    assert len(fold) == 500
    record = {"QUESTION": "Does it help?", "CONTEXTS": ["Background.", "Results."], "final_decision": "no"}
    ori = {fold[0]: record, fold[1]: {**record, "final_decision": "yes"}, "1": record, "2": record}
    (tmp_path / "ori_pqal.json").write_text(json.dumps(ori))
    res = load_benchmark("pubmedqa", tmp_path / "ori_pqal.json")
    assert [(it.id, it.answers) for it in res.items] == [(fold[0], ["B"]), (fold[1], ["A"])]
    assert res.items[0].loglik_context() == "Abstract: Background.\nResults.\nQuestion: Does it help?\nAnswer:"
    assert len(load_benchmark("pubmedqa", tmp_path / "ori_pqal.json", fold="all").items) == 4
    (tmp_path / "outside.json").write_text(json.dumps({"1": record}))
    with pytest.raises(EvalError, match="none of the 1 PubMedQA items .* use fold='all'"):
        load_benchmark("pubmedqa", tmp_path / "outside.json")
    assert len(load_benchmark("pubmedqa", "bundled").items) >= 20  # the course's own set is not filtered


def test_empty_sources_are_errors_not_silent(tmp_path):
    _jsonl(
        tmp_path / "validation.jsonl", [{"question": "Q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": -1}]
    )
    with pytest.raises(EvalError, match="medmcqa source .* gave no items; 1 records skipped.*unlabelled"):
        load_benchmark("medmcqa", tmp_path / "validation.jsonl")


def test_items_are_sampled_with_the_seed_not_the_first_n():
    items = load_benchmark("mmedbench", "bundled", languages=["en", "zh"]).items
    a, b = select_items(items, 5, seed=42), select_items(items, 5, seed=42)
    assert [i.id for i in a] == [i.id for i in b] and len(a) == 10
    assert {i.lang for i in a} == {"en", "zh"}
    firsts = [i.id for i in items if i.lang == "en"][:5]
    assert [i.id for i in a if i.lang == "en"] != firsts
    assert [i.id for i in select_items(items, 5, seed=7)] != [i.id for i in a]
    assert select_items(items, 0, seed=1) == items


# --------------------------------------------------------------------------- lm-evaluation-harness's own tasks


def _hub_format_files(d: Path) -> dict[str, Path]:
    """Local copies of the bundled English sets in the formats the harness's tasks load."""
    medqa = load_benchmark("medqa", "bundled").items
    hf = [
        {"id": it.id, "sent1": it.question, "sent2": "", **{f"ending{i}": o for i, o in enumerate(it.options)}}
        | {"label": "ABCD".index(it.answers[0])}
        for it in medqa
    ]
    pub = [json.loads(line) for line in (EVAL_DIR / "pubmedqa" / "pqa_labeled.jsonl").read_text().splitlines()]
    bigbio = [
        {
            "QUESTION": r["question"],
            "CONTEXTS": r["context"]["contexts"],
            "LABELS": r["context"].get("labels", []),
            "final_decision": r["final_decision"],
            "LONG_ANSWER": r.get("long_answer", ""),
            "pubid": str(r["pubid"]),
        }
        for r in pub
    ]
    return {
        "medqa": _jsonl(d / "medqa_hf" / "test.jsonl", hf),
        "medmcqa": shutil.copy(EVAL_DIR / "medmcqa" / "validation.jsonl", d / "validation.jsonl"),
        "pubmedqa": _jsonl(d / "pubmedqa_bigbio" / "test.jsonl", bigbio),
    }


def test_our_prompts_and_scores_equal_the_harness_builtin_tasks(tiny_dir, tmp_path):
    """The harness's own medqa_4options, medmcqa and pubmedqa YAMLs (their prompt functions, choices and target
    delimiter), pointed at local files in the Hub formats, against our loaders and scorer on the tiny model."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmed_helpers.steps.evaluate import loglik_scores

    builtin = Path(lm_eval.__file__).parent / "tasks"
    files = _hub_format_files(tmp_path / "data")
    yaml_of = {"medqa": "medqa/medqa.yaml", "medmcqa": "medmcqa/medmcqa.yaml", "pubmedqa": "pubmedqa/pubmedqa.yaml"}
    tasks = {}
    for bench, task in HARNESS_TASKS.items():
        name = f"mmed_check_{task}"
        (tmp_path / f"{name}.yaml").write_text(
            f"include: {builtin / yaml_of[bench]}\ntask: {name}\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    {_split(bench)}: {files[bench]}\n"
            "training_split: null\nvalidation_split: null\n" + ("test_split: test\n" if bench != "medmcqa" else "")
        )
        tasks[bench] = name
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_dir},dtype=float32",
        tasks=list(tasks.values()),
        task_manager=TaskManager(include_path=str(tmp_path)),
        batch_size=1,
        log_samples=True,
        device="cpu",
    )
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype="float32").eval()
    for bench, name in tasks.items():
        items = load_benchmark(bench, files[bench], fold="all").items
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        assert len(samples) == len(items) >= 20
        ours = loglik_scores(model, tok, items, batch_size=4, progress=False)
        for s, mine in zip(samples, ours, strict=True):
            assert [a[0] for a in s["arguments"]] == [mine.item.loglik_context()] * len(mine.logliks)
            assert [a[1] for a in s["arguments"]] == mine.item.loglik_choices()
            assert mine.logliks == pytest.approx([float(r[0]) for r in s["filtered_resps"]], abs=1e-4)
        acc = sum(m.pred == m.item.answers[0] for m in ours) / len(ours)
        assert math.isclose(out["results"][name]["acc,none"], acc), bench
        if "acc_norm,none" in out["results"][name]:
            norm = sum(m.pred_norm == m.item.answers[0] for m in ours) / len(ours)
            assert math.isclose(out["results"][name]["acc_norm,none"], norm), bench


def _split(bench: str) -> str:
    return "validation" if bench == "medmcqa" else "test"  # the harness scores MedMCQA's validation split


def test_the_evaluation_api_keeps_its_old_import_path():
    """``mmed_helpers.evaluate`` is relied on from outside: it re-exports the same objects."""
    import mmed_helpers.evaluate as old
    from mmed_helpers.steps import benchmarks, evaluate

    assert old.load_benchmark is benchmarks.load_benchmark and old.EvalItem is benchmarks.EvalItem
    assert old.evaluate_model is evaluate.evaluate_model and old.compare_models is evaluate.compare_models
