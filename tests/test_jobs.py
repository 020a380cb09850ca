import json

import pytest

from mmed_helpers.core.jobs import Job, JsonlStore, run_jobs
from mmed_helpers.core.llm import Completion


def upper(batch):
    return [Completion(j.payload.upper()) for j in batch]


def test_run_jobs_does_only_what_is_missing(tmp_path):
    store = JsonlStore(tmp_path / "raw.jsonl")
    jobs = [Job(f"j{i}", f"text {i}", {"lang": "en"}) for i in range(5)]
    seen = []
    assert run_jobs(jobs[:3], lambda b: seen.extend(j.id for j in b) or upper(b), store, 2) == 3
    assert run_jobs(jobs, lambda b: seen.extend(j.id for j in b) or upper(b), store, 2) == 2
    assert seen == ["j0", "j1", "j2", "j3", "j4"]
    reopened = JsonlStore(tmp_path / "raw.jsonl")
    assert reopened.records["j4"] == {"id": "j4", "lang": "en", "output": "TEXT 4", "error": None}
    assert len(reopened) == 5


def test_a_batch_size_below_one_is_refused_instead_of_running_empty_batches(tmp_path):
    store = JsonlStore(tmp_path / "raw.jsonl")
    calls = []
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"batch_size must be >= 1, got {bad}"):
            run_jobs([Job("a", "x")], lambda b: calls.append(b) or upper(b), store, bad)
    assert calls == [] and len(store) == 0 and not (tmp_path / "raw.jsonl").exists()


def test_failed_jobs_are_recorded_and_retried(tmp_path):
    store = JsonlStore(tmp_path / "raw.jsonl")
    jobs = [Job("a", "x"), Job("b", "y")]
    run_jobs(
        jobs, lambda b: [Completion("", error="HTTP 503") if j.id == "b" else Completion("ok") for j in b], store, 8
    )
    assert store.done("a") and not store.done("b")
    assert run_jobs(jobs, upper, store, 8) == 1
    assert JsonlStore(tmp_path / "raw.jsonl").records["b"]["output"] == "Y"


def test_worker_must_answer_every_job(tmp_path):
    with pytest.raises(RuntimeError, match="returned 1 results for 2 jobs"):
        run_jobs([Job("a", "x"), Job("b", "y")], lambda b: upper(b)[:1], JsonlStore(tmp_path / "r.jsonl"), 8)


def test_claim_stores_records_refuses_other_settings_and_lets_prompts_grow(tmp_path):
    from mmed_helpers.core.jobs import StoreMismatch, claim_stores

    record = tmp_path / "raw" / "identity.json"
    ident = {"model": "m", "generation": {"temperature": 0.7}, "prompts": {"en/ift": "a"}}
    claim_stores(record, ident, fix="FIX")
    before = record.read_bytes()
    claim_stores(record, ident, fix="FIX")  # the same: nothing rewritten
    assert record.read_bytes() == before
    with pytest.raises(StoreMismatch, match=r"were made with a different generation: FIX"):
        claim_stores(record, {**ident, "generation": {"temperature": 0.2}}, fix="FIX")
    with pytest.raises(StoreMismatch, match=r"a different model, prompts\[en/ift\]"):
        claim_stores(record, {**ident, "model": "other", "prompts": {"en/ift": "b"}}, fix="FIX")
    claim_stores(record, {**ident, "prompts": {"fr/ift": "c"}}, fix="FIX")  # a language added to the run
    assert json.loads(record.read_text())["prompts"] == {"en/ift": "a", "fr/ift": "c"}
