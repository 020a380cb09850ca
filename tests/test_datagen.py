"""Data generation: prompts, seeds, parsing, filters, the resumable store and the whole step."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from mmed_helpers.core.config import load_profile
from mmed_helpers.core.corpus import load_corpus, select_passages
from mmed_helpers.core.jobs import JsonlStore
from mmed_helpers.core.languages import LANGUAGES, TABLE
from mmed_helpers.core.layout import RunLayout
from mmed_helpers.core.llm import Completion
from mmed_helpers.core.mcformat import LETTERS, extract_answers
from mmed_helpers.core.records import MCItem
from mmed_helpers.steps.generate import (
    REASONS,
    STEPS,
    DataGenError,
    ParseError,
    balance_answer_letters,
    condense_jobs,
    extract_json,
    filter_items,
    item_jobs,
    load_prompt,
    load_seeds,
    parse_ift,
    parse_mc,
    prompt_hashes,
    run_datagen,
    validate,
)

CFG = load_profile("smoke").datagen


# --------------------------------------------------------------------------- bundled prompts and seeds


@pytest.mark.parametrize("lang", LANGUAGES)
def test_prompts_load_and_their_examples_pass_the_filters(lang):
    for step in STEPS:
        prompt = load_prompt(step, lang)
        msgs = prompt.messages("TEXT-UNDER-TEST")
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
        assert msgs[-1]["content"].count("TEXT-UNDER-TEST") == 1 and "<<" not in msgs[-1]["content"]
    for kind, parse in (("ift", parse_ift), ("mc", parse_mc)):
        ex = load_prompt(kind, lang).examples[0]
        assert validate(kind, parse(ex["output"]), lang, ex["input"], CFG) is None, (lang, kind)
    condense = load_prompt("condense", lang).examples[0]
    assert len(condense["output"]) < len(condense["input"])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_seed_sets_are_complete_and_pass_every_filter(lang):
    for kind in ("ift", "mc"):
        seeds = load_seeds(kind, [lang])
        assert len(seeds) >= 20
        assert len({s.id for s in seeds}) == len(seeds)
        assert len({s.specialty for s in seeds}) >= 10
        kept, report = filter_items(kind, [], {}, CFG, seeds)
        assert len(kept) == len(seeds), report.rejected
    mcs = load_seeds("mc", [lang])
    letters = Counter(a for m in mcs for a in m.answers)
    assert max(letters.values()) <= 6 + 4 and set(letters) <= set(LETTERS[:5])  # four or five options
    multi = [m for m in mcs if len(m.answers) > 1]
    if lang in ("ja", "fr"):  # MMedBench's Japanese and French items can have several correct answers
        assert len(multi) >= 4 and all(m.prompt().endswith(TABLE[lang].ask_multi) for m in multi)
        assert all(extract_answers(m.target(), len(m.options)) == m.answers for m in mcs)
    else:
        assert multi == []
    assert {len(m.options) for m in mcs} == {4, 5}


def test_seeds_are_not_duplicated_across_kinds_or_languages():
    questions = [s.question for kind in ("ift", "mc") for s in load_seeds(kind, LANGUAGES)]
    assert len(set(questions)) == len(questions)


def test_missing_prompt_or_seed_file_names_it(tmp_path):
    with pytest.raises(DataGenError, match="no ift prompt for language 'de'"):
        load_prompt("ift", "de")
    with pytest.raises(DataGenError, match="no mc seeds for language 'de'"):
        load_seeds("mc", ["de"])
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "ift.yaml").write_text("system: s\nuser: no placeholder\nexamples: []\n")
    with pytest.raises(DataGenError, match="must contain <<CONDENSED>> exactly once"):
        load_prompt("ift", "en", tmp_path)


def test_prompt_hashes_cover_every_file():
    hashes = prompt_hashes(LANGUAGES)
    assert len(hashes) == 18 and all(len(h) == 64 for h in hashes.values())


# --------------------------------------------------------------------------- parsing


def test_extract_json_tolerates_fences_and_chatter():
    assert extract_json('Sure! {"question": "Q?", "answer": "A."} Hope it helps') == {"question": "Q?", "answer": "A."}
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('{bad {"a": {"b": 2}}') == {"a": {"b": 2}}
    with pytest.raises(ParseError):
        extract_json("no json here")
    with pytest.raises(ParseError):
        extract_json('["a list"]')


def test_parse_ift_and_mc():
    assert parse_ift('{"question": " Q? ", "answer": "A. "}') == {"question": "Q?", "answer": "A."}
    with pytest.raises(ParseError, match="question"):
        parse_ift('{"q": "Q?", "answer": "A"}')
    mc = parse_mc(
        '{"question": "Q?", "options": {"A": "x", "B": "y", "C": "z", "D": "w"}, "answer": "c.", "rationale": "R."}'
    )
    assert mc == {"question": "Q?", "options": ["x", "y", "z", "w"], "answer": "C", "rationale": "R."}
    with pytest.raises(ParseError, match="lettered A, B, C"):
        parse_mc('{"question": "Q", "options": {"A": "x", "C": "y"}, "answer": "A", "rationale": "R"}')
    with pytest.raises(ParseError, match="rationale"):
        parse_mc('{"question": "Q", "options": ["x", "y"], "answer": "A"}')


# --------------------------------------------------------------------------- validation reasons

SOURCE = (
    "Iron deficiency anemia in adults usually results from chronic blood loss, most often gastrointestinal or "
    "menstrual. Oral iron is the first-line treatment for most patients."
)
GOOD_IFT = {
    "question": "What usually causes iron deficiency anemia in adults?",
    "answer": "It usually results from chronic blood loss, most often gastrointestinal or menstrual.",
}
GOOD_MC = {
    "question": "What is the first-line treatment of iron deficiency anemia for most adults?",
    "options": ["Oral iron", "Blood transfusion", "Vitamin B12 injections", "Folic acid"],
    "answer": "A",
    "rationale": "Oral iron is the first-line treatment for most patients.",
}


@pytest.mark.parametrize(
    "kind, change, reason",
    [
        ("ift", {}, None),
        ("mc", {}, None),
        ("ift", {"answer": "  "}, "empty_field"),
        ("ift", {"answer": "Blood."}, "too_short"),
        ("ift", {"answer": "Chronic blood loss. " * 120}, "too_long"),
        ("mc", {"options": ["Oral iron", "Transfusion", "Folic acid"]}, "mc_option_count"),
        ("mc", {"options": ["Oral iron", "oral  iron", "Folic acid", "Transfusion"]}, "mc_duplicate_options"),
        ("mc", {"answer": "E"}, "mc_bad_answer"),
        ("mc", {"options": ["Oral iron", "", "Folic acid", "Transfusion"]}, "empty_field"),
        (
            "ift",
            {
                "question": "Quelle est la cause habituelle de l'anémie ferriprive chez l'adulte ?",
                "answer": "Elle résulte le plus souvent d'un saignement chronique, digestif ou gynécologique.",
            },
            "wrong_language",
        ),
        (
            "ift",
            {"answer": "It is caused by a genetic defect in hepcidin regulation in most young athletes."},
            "unsupported_by_source",
        ),
        ("mc", {"answer": "C"}, "unsupported_by_source"),
    ],
)
def test_validate_reasons(kind, change, reason):
    fields = {**(GOOD_IFT if kind == "ift" else GOOD_MC), **change}
    assert validate(kind, fields, "en", SOURCE, CFG) == reason


def test_every_reason_has_a_row_in_the_report():
    _, report = filter_items("ift", [], {}, CFG, [])
    assert [r["outcome"] for r in report.rows()] == ["kept", *REASONS]


# --------------------------------------------------------------------------- the resumable store


def test_store_recovers_a_cut_line_and_retries_errors(tmp_path):
    path = tmp_path / "raw.jsonl"
    store = JsonlStore(path)
    store.append([{"id": "a", "output": "x", "error": None}, {"id": "b", "output": "", "error": "HTTP 503"}])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"id": "c", "output": "cut sh')  # a kill in the middle of a write
    store = JsonlStore(path)
    assert store.recovered == 1 and set(store.records) == {"a", "b"}
    assert store.done("a") and not store.done("b") and not store.done("c")
    before = path.read_bytes()
    JsonlStore(path)  # opening only reads: the cut line is still there, byte for byte
    assert path.read_bytes() == before
    store.append([{"id": "b", "output": "ok now", "error": None}])
    reopened = JsonlStore(path)
    assert reopened.done("b") and reopened.records["b"]["output"] == "ok now" and reopened.recovered == 0
    lines = path.read_text().splitlines()
    assert path.read_bytes().startswith(before)  # nothing written before is ever rewritten
    assert lines[2] == '{"id": "c", "output": "cut sh' and reopened.corrupt == 1  # ended, kept, not parsed
    assert [json.loads(line)["id"] for i, line in enumerate(lines) if i != 2] == ["a", "b", "b"]


def test_store_keeps_a_whole_last_record_without_its_newline(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text('{"id": "a", "output": "x", "error": null}\n{"id": "b", "output": "y", "error": null}')
    store = JsonlStore(path)
    assert store.done("a") and store.done("b") and (store.recovered, store.corrupt) == (0, 0)
    store.append([{"id": "c", "output": "z", "error": None}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


# --------------------------------------------------------------------------- the whole step


class ExtractiveBackend:
    """A generator for tests that writes well-formed items from sentences of the source passage.

    The real filters then decide; the tiny model cannot produce parseable output, so this is what shows
    that good items are kept and saved."""

    name = "extractive-test"

    def __init__(self, passages):
        self.passages = passages
        self.calls = 0

    def describe(self):
        return {"backend": self.name}

    def generate(self, conversations, params):
        self.calls += len(conversations)
        return [Completion(self._one(c[-1]["content"])) for c in conversations]

    def _one(self, user):
        for p in self.passages:
            sentences = [s for s in re.split(r"(?<=[.。!?])\s*", p.paragraphs[0]) if s]
            if p.text in user:  # condense: keep the first paragraph
                return p.paragraphs[0]
            if p.paragraphs[0] in user:
                if '"options"' in user:
                    opts = [re.split(r"(?<=[.。])\s*", para)[0] for para in p.paragraphs[:4]]
                    return json.dumps(
                        {
                            "question": sentences[0],
                            "options": dict(zip("ABCD", opts, strict=True)),
                            "answer": "A",
                            "rationale": sentences[0],
                        },
                        ensure_ascii=False,
                    )
                return json.dumps({"question": sentences[0], "answer": " ".join(sentences[:2])}, ensure_ascii=False)
        return "I cannot help with that."


def test_run_datagen_keeps_good_items_and_resumes(tmp_path):
    cfg = load_profile("smoke", {"languages": ["en", "fr", "ru"], "datagen.ift_per_passage": 2})
    passages = select_passages(load_corpus(cfg.languages), cfg.datagen.passages_per_language)
    backend = ExtractiveBackend(passages)
    result = run_datagen(cfg, RunLayout(tmp_path), backend, progress=False)
    n = len(passages)
    assert result.generated_now == backend.calls == n + 2 * n + n
    ift, mc = result.reports["ift"], result.reports["mc"]
    assert ift.generated == 2 * n and mc.generated == n
    assert ift.rejected["exact_duplicate"] == n  # the second item of each passage repeats the first
    seeds = {kind: len(load_seeds(kind, cfg.languages)) for kind in ("ift", "mc")}
    assert seeds == {"ift": 60, "mc": 64}  # 20 per language, and 4 multi-answer MC items in French
    assert ift.kept == seeds["ift"] + n and mc.kept == seeds["mc"] + n
    for report in (ift, mc):  # every output and seed is accounted for exactly once
        assert report.kept + sum(report.rejected.values()) == seeds[report.kind] + report.generated

    from datasets import load_from_disk

    ds = load_from_disk(str(RunLayout(tmp_path).mc))
    assert len(ds) == mc.kept and set(ds["origin"]) == {"seed", "generated"}
    row = next(r for r in ds if r["origin"] == "generated")
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert (
        MCItem(row["id"], row["lang"], row["question"], row["options"], row["answer"], row["rationale"]).prompt()
        == row["messages"][0]["content"]
    )

    # the backend always answers "A": the saved set has the correct option moved so that letters are balanced
    generated = [r for r in ds if r["origin"] == "generated"]
    letters = Counter(r["answer"] for r in generated)
    assert mc.answer_balance["moved"] == len(generated) and set(letters) <= set("ABCD")
    assert max(letters.values()) - min(letters[x] for x in "ABCD") <= 1 and len(letters) > 1, letters
    by_passage = {p.id: p for p in passages}
    for r in generated:  # the right option is still the passage's first paragraph's first sentence
        first = re.split(r"(?<=[.。])\s*", by_passage[r["source_id"]].paragraphs[0])[0]
        assert r["options"][LETTERS.index(r["answer"])] == first

    again = run_datagen(cfg, RunLayout(tmp_path), ExtractiveBackend(passages), progress=False)
    assert again.generated_now == 0 and again.reports["ift"].kept == ift.kept

    # other generation settings would reuse outputs made with the old ones: refused, named
    from mmed_helpers.core.jobs import StoreMismatch

    hotter = load_profile(
        "smoke", {"languages": ["en", "fr", "ru"], "datagen.ift_per_passage": 2, "datagen.temperature": 1.0}
    )
    with pytest.raises(StoreMismatch, match=r"made with a different generation: restore those settings"):
        run_datagen(hotter, RunLayout(tmp_path), ExtractiveBackend(passages), progress=False)


def test_run_datagen_counts_passages_without_condensed_text(tmp_path):
    class Silent(ExtractiveBackend):
        def _one(self, user):
            return "" if "<<" not in user and any(p.text in user for p in self.passages[:1]) else super()._one(user)

    cfg = load_profile("smoke", {"languages": ["en"]})
    passages = select_passages(load_corpus(["en"]), 2)
    result = run_datagen(cfg, RunLayout(tmp_path), Silent(passages), progress=False)
    assert result.reports["ift"].rejected["no_condensed_text"] == 1
    assert result.reports["ift"].generated == 1  # only the passage that was condensed got an item


def test_bad_inputs_give_one_clear_error_or_a_counted_reject_and_no_partial_artifact(tmp_path):
    # an empty corpus without seeds: one error, no dataset written
    cfg = load_profile("smoke", {"languages": ["en"], "datagen.include_seeds": False})
    with pytest.raises(DataGenError, match=r"no ift item survived filtering for \['en'\]; see the reject table"):
        run_datagen(cfg, RunLayout(tmp_path / "empty"), ExtractiveBackend([]), passages=[], progress=False)
    assert not RunLayout(tmp_path / "empty").has("ift") and not RunLayout(tmp_path / "empty").has("mc")

    # a passage labelled French whose text is English: what it yields is counted as wrong_language
    en = select_passages(load_corpus(["en"]), 1)[0]
    mislabelled = dataclasses.replace(en, id="fr-901", lang="fr")
    cfg = load_profile("smoke", {"languages": ["en", "fr"]})
    result = run_datagen(
        cfg, RunLayout(tmp_path / "lang"), ExtractiveBackend([mislabelled]), passages=[mislabelled], progress=False
    )
    assert [result.reports[k].rejected["wrong_language"] for k in ("ift", "mc")] == [1, 1]

    # MC items fail every filter while IFT items pass: neither dataset is saved (not one without the other)
    class NoOptions(ExtractiveBackend):
        def _one(self, user):
            return "no JSON here" if '"options"' in user else super()._one(user)

    cfg = load_profile("smoke", {"languages": ["en"], "datagen.include_seeds": False})
    passages = select_passages(load_corpus(["en"]), 2)
    with pytest.raises(DataGenError, match="no mc item survived filtering"):
        run_datagen(cfg, RunLayout(tmp_path / "half"), NoOptions(passages), passages=passages, progress=False)
    assert not RunLayout(tmp_path / "half").has("ift")


def test_job_ids_are_stable():
    p = load_corpus(["en"])[:2]
    assert [j.id for j in condense_jobs(p)] == ["en-001:condense:0", "en-002:condense:0"]
    jobs = item_jobs("mc", p, {"en-001": "text"}, 2)
    assert [j.id for j in jobs] == ["en-001:mc:0", "en-001:mc:1"]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from mmed_helpers.core.config import load_profile
    from mmed_helpers.steps.generate import run_datagen
    from mmed_helpers.core.layout import RunLayout
    from mmed_helpers.core.llm import LocalBackend
    cfg = load_profile("smoke", {"datagen.batch_size": 1, "datagen.passages_per_language": 3})
    run_datagen(cfg, RunLayout(sys.argv[2]), LocalBackend(sys.argv[1], batch_size=1), progress=False)
    print("FINISHED")
    """
)


def test_killed_generation_resumes_without_loss_or_duplicates(tiny_dir, tmp_path):
    """Kill a real generation process mid-run, resume it, and check the final set."""
    out = tmp_path / "gen"
    raw = RunLayout(out).generation_store("condense")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tiny_dir), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while time.time() < deadline and (not raw.exists() or raw.read_text().count("\n") < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = raw.read_text().count("\n")
    assert 4 <= done_before < 18, "the process must be killed mid-run"

    resumed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(tiny_dir), str(out)], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0 and "FINISHED" in resumed.stdout, resumed.stderr[-2000:]
    expected = {f"{lang}-{i:03d}" for lang in LANGUAGES for i in range(1, 4)}
    for step in STEPS:
        lines = RunLayout(out).generation_store(step).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]  # nothing corrupt
        ids = [r["id"] for r in records if not r["error"]]
        assert len(ids) == len(set(ids)), f"duplicates in {step}"
        if step == "condense":
            assert {i.split(":")[0] for i in ids} == expected
    manifest_free = JsonlStore(raw)
    assert manifest_free.recovered == 0 and len(manifest_free) == 18


def test_multi_answer_keys_are_parsed_normalised_and_checked():
    base = {"question": "Lesquels ?", "options": {"A": "un", "B": "deux", "C": "trois", "D": "quatre", "E": "cinq"}}
    from mmed_helpers.steps.generate import check_mc

    for given in ("A, C", "c,a", ["A", "C"], "AC"):
        item = parse_mc(json.dumps({**base, "answer": given, "rationale": "Parce que."}))
        assert item["answer"] == "A,C" and check_mc(item) is None
    assert parse_mc(json.dumps({**base, "answer": "b.", "rationale": "r"}))["answer"] == "B"
    for bad in ("A,A", "F", "A,F"):
        item = parse_mc(json.dumps({**base, "answer": bad, "rationale": "r"}))
        assert check_mc(item) == "mc_bad_answer", bad


def _mc(i, answer, rationale, origin="generated", n=4):
    return MCItem(
        f"g{i:03d}", "en", f"Question {i}?", [f"option text {k}" for k in range(n)], answer, rationale, "", origin
    )


def test_generated_answer_letters_are_balanced_and_rationales_follow_their_options():
    items = [
        _mc(i, "B", "Option B is right; (A) and C are not. A patient with a B12 deficiency ...") for i in range(40)
    ]
    items += [_mc(40, "A,C", "A and C are both correct.", n=5), _mc(41, "B", "B is right.")]  # last: cannot tell
    items += [_mc(42, "B", "Seeds stay as written.", origin="seed")]
    out, summary = balance_answer_letters(items, seed=3)
    assert summary["moved"] == 41 and summary["left_as_written"] == 1
    letters = Counter(x.answer for x in out[:40])
    assert sorted(letters.values()) == [10, 10, 10, 10]  # exactly balanced over A-D
    for before, after in zip(items, out, strict=True):
        right = [before.options[LETTERS.index(a)] for a in before.answer.split(",")]
        assert sorted(after.options[LETTERS.index(a)] for a in after.answer.split(",")) == sorted(right)
        assert sorted(after.options) == sorted(before.options)
    moved = out[0]
    old_to_new = {old: LETTERS[moved.options.index(text)] for old, text in zip(LETTERS, items[0].options, strict=False)}
    assert moved.rationale == (
        f"Option {old_to_new['B']} is right; ({old_to_new['A']}) and {old_to_new['C']} are not. "
        "A patient with a B12 deficiency ..."
    )
    assert out[41] == items[41] and out[42] == items[42]  # "B is right." could be a word; seeds untouched
    again, _ = balance_answer_letters(items, seed=3)
    assert again == out  # seeded
    assert balance_answer_letters(items, seed=4)[0] != out


def test_a_corpus_passage_that_copies_a_benchmark_question_yields_no_training_item(tmp_path):
    """A planted copy of a bundled MedQA question in the corpus: the generator turns it into an IFT and an MC
    item, and both are removed as ``benchmark_overlap``, named in the per-benchmark report; the other passages'
    items are kept."""
    from mmed_helpers.core.corpus import Passage
    from mmed_helpers.steps.benchmarks import decontamination_index, load_profile_benchmarks

    cfg = load_profile("smoke", {"languages": ["en"]})
    index = decontamination_index(cfg)
    medqa = [it for it in load_profile_benchmarks(cfg.evaluation, ["en"], True)[0] if it.benchmark == "medqa"][3]
    clean = select_passages(load_corpus(["en"]), 2)
    planted = Passage(
        "planted-1",
        "en",
        "cardiology",
        "Copied from an exam",
        "\n\n".join([medqa.question, *clean[0].paragraphs[1:4]]),
    )
    passages = [*clean, planted]
    result = run_datagen(cfg, RunLayout(tmp_path), ExtractiveBackend(passages), False, passages, index)
    for kind in ("ift", "mc"):
        report = result.reports[kind]
        assert report.rejected["benchmark_overlap"] == 1, report.to_dict()
        assert report.examples["benchmark_overlap"]["id"].startswith("planted-1:")
        found = report.to_dict()["contamination"]
        assert found["removed"] == {"medqa": 1} and found["hit_items"] == {"medqa": [medqa.id]}
        assert found["benchmark_items"] == index.items
        kept = [it.source_id for it in result.items[kind] if it.origin == "generated"]
        assert sorted(kept) == sorted(p.id for p in clean)
    assert "benchmark_overlap" in {r["outcome"] for r in result.reports["ift"].rows() if r["total"]}


def test_the_generation_estimate_counts_every_prompt_and_measures_on_the_runs_first_batches(tmp_path):
    """The estimate's prompts and tokens follow from the passages and the real prompts; its speed is measured on
    the run's first condense batch and first item batch, which go into the run's stores: the run then generates
    only the rest, and the outputs are the same as without an estimate."""
    from mmed_helpers.core.ingest import approximate_tokens
    from mmed_helpers.steps.generate import condense_jobs, estimate_generation

    cfg = load_profile("smoke", {"languages": ["en", "fr", "zh"], "datagen.batch_size": 3})
    passages = select_passages(load_corpus(cfg.languages), 2)
    backend = ExtractiveBackend(passages)
    est = estimate_generation(cfg, RunLayout(tmp_path / "a"), backend, passages, approximate_tokens)
    dg, n = cfg.datagen, len(passages)
    rows = {r["step"]: r for r in est.rows}
    assert [rows[k]["prompts"] for k in STEPS] == [n, n * dg.ift_per_passage, n * dg.mc_per_passage]
    assert [rows[k]["pending"] for k in STEPS] == [n - 3, n * dg.ift_per_passage - 3, n * dg.mc_per_passage]
    jobs = condense_jobs(passages)
    assert rows["condense"]["input_tokens"] == sum(approximate_tokens(m["content"]) for j in jobs for m in j.payload)
    assert all(r["output_tokens_max"] == dg.max_new_tokens * r["prompts"] for r in est.rows)
    assert backend.calls == 6 and est.probes["condense"]["prompts"] == est.probes["items"]["prompts"] == 3
    per_prompt = est.probes["condense"]["seconds"] / 3
    assert rows["condense"]["seconds"] == pytest.approx((n - 3) * per_prompt)
    assert est.seconds() == pytest.approx(sum(r["seconds"] for r in est.rows)) and "prompts to go" in est.summary()

    result = run_datagen(cfg, RunLayout(tmp_path / "a"), backend, progress=False, passages=passages)
    total = sum(rows[k]["prompts"] for k in STEPS)
    assert result.generated_now == total - 6 and backend.calls == total
    plain = run_datagen(cfg, RunLayout(tmp_path / "b"), ExtractiveBackend(passages), progress=False, passages=passages)
    for kind in ("ift", "mc"):
        assert [it.to_record() for it in result.items[kind]] == [it.to_record() for it in plain.items[kind]]
    # all done: the estimate generates nothing and says so
    again = estimate_generation(cfg, RunLayout(tmp_path / "a"), backend, passages, approximate_tokens)
    assert backend.calls == total and again.seconds() == 0 and again.summary().startswith("nothing left")
