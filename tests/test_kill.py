"""SIGKILL a real subprocess in the middle of translating and of merging, resume, and compare with a run that was
never interrupted: nothing lost, nothing duplicated, the same records and the same weights. (Generation and
training are killed the same way in test_datagen.py and test_train.py.)"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmed_helpers.core.layout import RunLayout

TRANSLATE = textwrap.dedent(
    """
    import sys
    from mmed_helpers.core.config import load_profile
    from mmed_helpers.core.layout import RunLayout
    from mmed_helpers.core.llm import LocalBackend
    from mmed_helpers.steps.ccts import CCTSScorer
    from mmed_helpers.steps.generate import load_seeds
    from mmed_helpers.steps.translate import LLMTranslator, run_expansion
    cfg = load_profile("smoke", {"languages": ["en", "ja"], "ccts.max_source_samples": 1,
                                 "ccts.batch_size": 1, "ccts.max_new_tokens": 12})
    items = {kind: load_seeds(kind, ["en"]) for kind in ("ift", "mc")}
    translator = LLMTranslator(LocalBackend(sys.argv[1], batch_size=1), cfg.ccts.max_new_tokens)
    result = run_expansion(cfg, RunLayout(sys.argv[2]), translator, CCTSScorer(batch_size=8), items, progress=False)
    print("FINISHED", result.translated_now)
    """
)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("translate") / "whole"
    done = subprocess.run([sys.executable, "-c", TRANSLATE, str(tiny_dir), str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and "FINISHED" in done.stdout, done.stderr[-3000:]
    return RunLayout(out)


def test_killed_translation_resumes_to_the_uninterrupted_result(tiny_dir, tmp_path, uninterrupted):
    """Killed once while translating forward and once while translating back, then left to finish."""
    run = RunLayout(tmp_path / "run")
    args = [sys.executable, "-c", TRANSLATE, str(tiny_dir), str(run.root)]
    whole = {d: _records(uninterrupted.translation_store(d)) for d in ("forward", "backward")}
    for direction, after in (("forward", 4), ("backward", 3)):
        store = run.translation_store(direction)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _kill_when(proc, lambda s=store, n=after: s.exists() and s.read_bytes().count(b"\n") >= n)
        assert store.read_bytes().count(b"\n") < len(whole[direction]), "the process must be killed mid-run"
        assert not run.ccts_scores.exists() and not run.ift_translated.exists()  # nothing decided on half the data

    resumed = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "FINISHED" in resumed.stdout, resumed.stderr[-3000:]
    for d in ("forward", "backward"):
        got = _records(run.translation_store(d))
        ids = [r["id"] for r in got]
        assert len(ids) == len(set(ids)), f"duplicates in {d}"  # a line cut by the kill is ended, not repeated
        assert sorted(got, key=lambda r: r["id"]) == sorted(whole[d], key=lambda r: r["id"]), d
    assert _records(run.ccts_scores) == _records(uninterrupted.ccts_scores)
    from datasets import load_from_disk

    for name in ("ift_translated", "mc_translated"):
        a, b = load_from_disk(str(getattr(run, name))), load_from_disk(str(getattr(uninterrupted, name)))
        assert a.to_list() == b.to_list()


MERGE = textwrap.dedent(
    """
    import sys
    from mmed_helpers.steps.train import merge_adapter
    merge_adapter(sys.argv[1], sys.argv[2], sys.argv[3], dtype="float32")
    print("FINISHED")
    """
)


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def _random_dora_adapter(base: Path, out: Path) -> Path:
    """A DoRA adapter with random (non-zero) low-rank weights on ``base``: merging it changes every projection."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base))
    cfg = LoraConfig(r=8, lora_alpha=16, use_dora=True, init_lora_weights=False, target_modules=["q_proj", "v_proj"])
    get_peft_model(model, cfg).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))  # as training saves it beside the adapter
    return out


def test_killed_merge_leaves_the_old_model_or_none_and_resumes_to_the_same_weights(tiny_dir, tmp_path):
    from mmed_helpers.steps.train import MERGE_RECORD, merge_adapter

    adapter = _random_dora_adapter(tiny_dir, tmp_path / "adapter")
    expected = _weights(merge_adapter(tiny_dir, adapter, tmp_path / "whole", dtype="float32"))
    assert any((expected[k] != v).any() for k, v in _weights(tiny_dir).items() if k in expected)

    out = tmp_path / "merged"
    args = [sys.executable, "-c", MERGE, str(tiny_dir), str(adapter), str(out)]
    # kill 1: while the first merge writes its new folder; kill 2: the same while replacing a finished model
    for round_ in range(2):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _kill_when(proc, lambda: any(tmp_path.glob(".merged.new-*")))
        if round_ == 0:
            assert not (out / "config.json").exists(), "a killed first merge must leave no model"
        else:
            assert _weights(out).keys() == expected.keys()  # the finished model is still whole
        finished = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert finished.returncode == 0, finished.stderr[-3000:]
        got = _weights(out)
        assert got.keys() == expected.keys() and all((got[k] == expected[k]).all() for k in expected)
        assert not list(tmp_path.glob(".merged.*")), "the leftover of the kill was cleaned"
        (out / MERGE_RECORD).unlink()  # forget the merge so the next round writes it again
