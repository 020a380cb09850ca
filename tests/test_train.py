"""Training API on CPU: both backends (Unsloth's CPU fallback in a subprocess, plain PEFT in-process), DoRA,
merge exactness, 4-bit QLoRA, resume after a kill, and the clear errors."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mmed_helpers.core.config import load_profile
from mmed_helpers.core.layout import MissingArtifactError, RunLayout
from mmed_helpers.core.records import save_dataset, to_dataset
from mmed_helpers.steps.generate import load_seeds
from mmed_helpers.steps.mergecheck import merge_check
from mmed_helpers.steps.train import (
    TrainingError,
    last_checkpoint,
    load_sft_dataset,
    mask_problems,
    merge_adapter,
    split_validation,
    tokenize_completions,
    train_stage,
    training_canaries,
    validation_loss,
)

TEXTS = ["What defines chronic kidney disease?", "慢性乙型肝炎是什么？", "Что такое эпилепсия?"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    save_dataset(to_dataset(load_seeds("ift", ["en", "zh", "ru"]), "ift"), d / "ift")
    save_dataset(to_dataset(load_seeds("mc", ["en", "fr"]), "mc"), d / "mc")
    save_dataset(to_dataset([], "ift"), d / "empty")
    return d


def _cfg(**over):
    base = {"stage1.max_steps": 6, "stage1.save_steps": 3, "stage2.max_steps": 4, "stage2.save_steps": 2}
    return load_profile("smoke", {**base, **over})


@pytest.fixture
def peft_only(monkeypatch):
    monkeypatch.setenv("MMED_DISABLE_UNSLOTH", "1")


def test_peft_backend_dora_merge_and_qlora(peft_only, tiny_dir, data, tmp_path):
    cfg = _cfg()
    r1 = train_stage(
        "stage1", cfg.stage1, tiny_dir, [data / "ift", data / "empty"], tmp_path / "s1", cfg.model, progress=False
    )
    assert (r1.backend, r1.global_step) == ("peft", 6)
    assert (r1.examples, r1.validation_examples) == (48, 12)  # 20 % of each of the three languages held out
    assert set(r1.validation_by_language_base) == {"en", "zh", "ru"}
    assert [v.step for v in r1.validation] == [0, 6]  # eval_steps 50 > 6: before and after training
    assert len(r1.losses) == 6 and all(8.0 < loss < 8.7 for _, loss in r1.losses)
    assert (r1.adapter_dir / "adapter_config.json").is_file()
    adapter_cfg = json.loads((r1.adapter_dir / "adapter_config.json").read_text())
    assert (adapter_cfg["r"], adapter_cfg["lora_alpha"], adapter_cfg["use_dora"]) == (32, 16, True)
    assert set(adapter_cfg["target_modules"]) == set(cfg.stage1.target_modules)
    assert 0 < r1.trainable_parameters < 0.2 * r1.total_parameters and r1.quantized_layers == 0
    manifest = json.loads((tmp_path / "s1" / "manifest.json").read_text())
    assert manifest["outputs"]["global_step"] == 6 and manifest["parameters"]["stage"]["method"] == "dora"
    assert set(manifest["inputs"]) == {"data_0", "data_1"} and manifest["outputs"]["final_loss"] == r1.final_loss
    assert manifest["outputs"]["validation_loss_base"] == r1.validation_loss_base
    assert manifest["outputs"]["validation_loss_final"] == r1.validation_loss_final
    logged = json.loads((tmp_path / "s1" / "log_history.json").read_text())
    assert [h["validation_loss"] for h in logged if "validation_loss" in h] == [r1.validation_loss_final]
    assert list((tmp_path / "s1" / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard, offline

    merged = merge_adapter(tiny_dir, r1.adapter_dir, tmp_path / "merged", dtype="float32")
    check = merge_check(tiny_dir, r1.adapter_dir, merged, TEXTS)
    assert check["max_abs_diff"] < 1e-4 and check["argmax_agreement"] == 1.0
    assert check["adapter_effect_max"] > 100 * check["max_abs_diff"]  # the adapter changed the model

    r2 = train_stage("stage2", cfg.stage2, merged, [data / "mc"], tmp_path / "s2", cfg.model, progress=False)
    assert r2.quantized_layers == 14  # 2 layers x 7 projections held in bitsandbytes NF4
    qcfg = json.loads((r2.adapter_dir / "adapter_config.json").read_text())
    assert (qcfg["r"], qcfg["lora_alpha"], qcfg["use_dora"]) == (16, 8, False)
    assert r2.global_step == 4


def test_loss_falls_only_on_the_completion(tiny_dir, data):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    before = sorted(p.name for p in (data / "mc").iterdir())
    ds = load_sft_dataset([data / "mc"])
    feats = tokenize_completions(ds, tok, max_length=4096)
    assert sorted(p.name for p in (data / "mc").iterdir()) == before  # no cache files in the run's data folder
    row, rec = feats[0], ds[0]
    target = [i for i, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
    assert tok.decode(target) == rec["completion"][0]["content"] + "<|eot_id|>"
    assert row["labels"][: len(row["labels"]) - len(target)] == [-100] * (len(row["labels"]) - len(target))
    short = tokenize_completions(ds, tok, max_length=16)  # prompts longer than 16 tokens leave no target
    assert len(short) == 0


def test_errors_name_the_fix(tiny_dir, data, tmp_path):
    cfg = _cfg()
    with pytest.raises(TrainingError, match="refusing to train on an empty dataset"):
        train_stage("stage1", cfg.stage1, tiny_dir, [data / "empty"], tmp_path / "x", cfg.model)
    with pytest.raises(TrainingError, match="nope not found: run the notebook that writes it first"):
        train_stage("stage1", cfg.stage1, tiny_dir, [tmp_path / "nope"], tmp_path / "x", cfg.model)
    with pytest.raises(MissingArtifactError, match="run notebook 03_stage1_dora first"):
        RunLayout(tmp_path).require("stage1_merged")
    with pytest.raises(TrainingError, match="no adapter in"):
        merge_adapter(tiny_dir, tmp_path, tmp_path / "m")
    assert not (tmp_path / "x").exists()  # nothing was loaded or written


def test_last_checkpoint_ignores_incomplete_ones(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        c = tmp_path / f"checkpoint-{step}"
        c.mkdir()
        if complete:
            (c / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert last_checkpoint(tmp_path / "none") is None


UNSLOTH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from mmed_helpers.core.config import load_profile
    from mmed_helpers.steps.train import train_stage, merge_adapter
    from mmed_helpers.steps.mergecheck import merge_check
    tiny, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    cfg = load_profile("smoke", {"stage1.max_steps": 6, "stage2.max_steps": 4})
    r1 = train_stage("stage1", cfg.stage1, tiny, [data / "ift"], out / "s1", cfg.model, progress=False)
    merged = merge_adapter(tiny, r1.adapter_dir, out / "merged", dtype="float32")
    check = merge_check(tiny, r1.adapter_dir, merged, ["What defines chronic kidney disease?"])
    r2 = train_stage("stage2", cfg.stage2, merged, [data / "mc"], out / "s2", cfg.model, progress=False)
    # the padding-free batch Unsloth + trl build: the same loss as one padded row per sample
    import torch
    from mmed_helpers.steps.train import _make_trainer, _training_args, load_for_training, load_sft_dataset
    from mmed_helpers.core.layout import TrainDir
    model, tok, _ = load_for_training(tiny, cfg.stage1, cfg.model)
    args = _training_args(cfg.stage1, cfg.model, TrainDir(out / "pk"), 42, False)
    trainer = _make_trainer("unsloth", model, tok, load_sft_dataset([data / "ift"]), args, cfg.stage1, cfg.model)
    rows = [trainer.train_dataset[i] for i in range(6)]
    flat = trainer.data_collator(rows)
    flat = {k: v for k, v in flat.items() if torch.is_tensor(v)}
    width = max(len(r["input_ids"]) for r in rows)
    def pad(xs, value):
        return torch.tensor([list(x) + [value] * (width - len(x)) for x in xs])
    ids = pad([r["input_ids"] for r in rows], tok.pad_token_id)
    def target(r):  # Unsloth builds the labels itself; trl keeps a completion mask
        if "labels" in r:
            return list(r["labels"])
        return [t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]
    labels = pad([target(r) for r in rows], -100)
    assert all(any(x != -100 for x in target(r)) and target(r)[0] == -100 for r in rows)
    mask = pad([[1] * len(r["input_ids"]) for r in rows], 0)
    model.eval()
    with torch.no_grad():
        packed_loss = float(model(**flat, use_cache=False).loss)
        padded_loss = float(model(input_ids=ids, labels=labels, attention_mask=mask).loss)
    pk = {"rows": int(flat["input_ids"].shape[0]), "position_ids": "position_ids" in flat,
          "packed_loss": packed_loss, "padded_loss": padded_loss}
    print("RESULT=" + json.dumps({"s1": r1.summary(), "s2": r2.summary(), "check": check, "packing": pk}))
    """
)


def test_unsloth_backend_runs_the_recipe_on_cpu(tiny_dir, data, tmp_path):
    env = {**os.environ, "MMED_DISABLE_UNSLOTH": "0", "MMED_TRAIN_BACKEND": "unsloth"}
    proc = subprocess.run(
        [sys.executable, "-c", UNSLOTH_SCRIPT, str(tiny_dir), str(data), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT="))[7:])
    assert res["s1"]["backend"] == res["s2"]["backend"] == "unsloth"
    assert res["s1"]["global_step"] == 6 and res["s2"]["global_step"] == 4
    assert res["s2"]["quantized_layers"] == 14
    assert res["check"]["max_abs_diff"] < 1e-4 and res["check"]["argmax_agreement"] == 1.0
    assert json.loads((tmp_path / "s1" / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    # the batch Unsloth + trl build from packing: true keeps the samples apart (the loss of one padded row each).
    # On a CPU Unsloth switches padding-free off (6 padded rows); on a GPU it flattens them into one row.
    pk = res["packing"]
    assert pk["packed_loss"] == pytest.approx(pk["padded_loss"], rel=1e-4), pk
    assert (pk["rows"] == 1) == pk["position_ids"], pk


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from mmed_helpers.core.config import load_profile
    from mmed_helpers.steps.train import train_stage
    cfg = load_profile("smoke", {"stage1.max_steps": 60, "stage1.save_steps": 4, "stage1.logging_steps": 1})
    r = train_stage("stage1", cfg.stage1, sys.argv[1], [sys.argv[2]], sys.argv[3], cfg.model, progress=False)
    print("RESULT=" + json.dumps(r.summary()))
    """
)


def test_killed_training_resumes_from_the_last_checkpoint(tiny_dir, data, tmp_path):
    out = tmp_path / "s1"
    args = [sys.executable, "-c", KILL_SCRIPT, str(tiny_dir), str(data / "ift"), str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "checkpoint-8" / "trainer_state.json").exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = last_checkpoint(out / "checkpoints")
    assert killed_at is not None, "no checkpoint before the kill"
    step = int(killed_at.name.split("-")[1])
    assert 8 <= step < 60 and not (out / "adapter").exists(), "the process must be killed mid-run"

    done = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT="))[7:])
    assert res["resumed_from"] == str(killed_at) and res["global_step"] == 60
    history = json.loads((out / "log_history.json").read_text())
    logged = [h["step"] for h in history if "loss" in h]
    assert logged[-1] == 60 and len(set(logged)) == len(logged)
    assert min(logged) == 1  # the resumed state carries the log of the steps before the kill


@pytest.mark.gpu
def test_gpu_qlora_stage_through_unsloth(tiny_dir, data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", UNSLOTH_SCRIPT, str(tiny_dir), str(data), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT="))[7:])
    assert res["s2"]["memory_kind"] == "gpu_allocated" and res["s2"]["quantized_layers"] == 14


def test_validation_split_is_seeded_per_language_and_disjoint(data):
    ds = load_sft_dataset([data / "ift"])
    train, val = split_validation(ds, 0.1, seed=7)
    again, val2 = split_validation(ds, 0.1, seed=7)
    other = split_validation(ds, 0.1, seed=8)[1]
    key = lambda d: [r["prompt"][0]["content"] for r in d]  # noqa: E731
    assert key(val) == key(val2) and key(val) != key(other)
    assert len(train) + len(val) == len(ds) and not set(key(train)) & set(key(val))
    assert sorted(val["lang"]) == ["en", "en", "ru", "ru", "zh", "zh"]
    assert len(split_validation(ds, 0.0, seed=7)[1]) == 0
    with pytest.raises(TrainingError, match=r"validation_fraction must be in \[0, 1\)"):
        split_validation(ds, 1.0, seed=7)


def test_validation_loss_is_token_weighted_cross_entropy(tiny_dir, data):
    """Against a direct computation: sum of -log p(target token) over all completion tokens / their count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmed_helpers.steps.train import CompletionCollator

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    feats = tokenize_completions(load_sft_dataset([data / "ift"]).select(range(0, 60, 7)), tok, 256)
    got = validation_loss(model, feats, CompletionCollator(tok), batch_size=3)
    total, n = 0.0, 0
    with torch.no_grad():
        for row in feats:
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(row["labels"][1:])
            keep = labels != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            n += int(keep.sum())
    assert got.tokens == n and got.loss == pytest.approx(total / n, rel=1e-5)
    assert set(got.by_language) == set(feats["lang"]) and model.training is False


def test_canaries_catch_a_leaking_mask_a_zero_learning_rate_and_no_adapter(peft_only, tiny_dir, data, tmp_path):
    """Planted defects: each must be caught. A mask that puts loss on the prompt; a learning rate of zero (the
    validation loss cannot move); an adapter on modules that do not exist."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ds = load_sft_dataset([data / "mc"])
    feats = tokenize_completions(ds, tok, max_length=4096)
    assert mask_problems(ds, feats, tok) == []
    leaking = feats.map(lambda r: {"labels": r["input_ids"]})  # loss on every token, prompt included
    assert mask_problems(ds, leaking, tok) == list(range(len(ds)))

    still = train_stage(
        "stage1", dataclasses.replace(_cfg().stage1, learning_rate=0.0), tiny_dir, [data / "ift"], tmp_path / "lr0",
        _cfg().model, progress=False,
    )  # fmt: skip
    assert still.validation_loss_final == pytest.approx(still.validation_loss_base, abs=1e-6)
    assert any("validation loss fell by" in p for p in training_canaries(still))

    moved = train_stage(
        "stage1", _cfg(**{"stage1.max_steps": 12}).stage1, tiny_dir, [data / "ift"], tmp_path / "ok", _cfg().model,
        progress=False,
    )  # fmt: skip
    assert training_canaries(moved) == [], moved.summary()

    with pytest.raises(ValueError, match="not found in the base model|Target modules"):
        train_stage(
            "stage1", _cfg(**{"stage1.target_modules": ["no_such_proj"]}).stage1, tiny_dir, [data / "ift"],
            tmp_path / "none", _cfg().model, progress=False,
        )  # fmt: skip


def test_a_held_out_item_and_its_translations_stay_out_of_training(tmp_path):
    from mmed_helpers.core.records import IFTSample

    src = [IFTSample(f"en-{i}", "en", f"Question {i}?", f"Answer {i}.") for i in range(10)]
    trans = [
        IFTSample(f"en-{i}|fr", "fr", f"Question {i} ?", f"Réponse {i}.", f"en-{i}", "translated") for i in range(10)
    ]
    save_dataset(to_dataset(src + trans, "ift"), tmp_path / "d")
    ds = load_sft_dataset([tmp_path / "d"])
    train, val = split_validation(ds, 0.2, seed=1)
    held = set(val["group"])
    assert len(val) == 4 and not held & set(train["group"])  # 2 per language; their pairs left out of training
    assert len(train) == 20 - sum(g in held for g in ds["group"])


def test_packed_batches_train_exactly_like_padded_ones_and_keep_samples_apart(tiny_dir, data):
    """The packed batch carries the same loss and the same gradients as the padded one (the same tokens carry
    the loss and no sample sees another), on the real Llama class with its chat template. Two planted defects,
    each of which lets samples attend to each other, must change the loss: positions that do not restart, and
    a cache left on (transformers then skips its packed-sequence detection)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmed_helpers.steps.train import CompletionCollator, PackedCollator

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model.config.use_cache = True  # as saved models usually say: the collator must switch it off itself
    feats = tokenize_completions(load_sft_dataset([data / "ift", data / "mc"]), tok, 1024)
    by_length = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]))
    batch = [feats[i] for i in [by_length[-1], *by_length[:7]]]  # the longest and the seven shortest
    lengths = [len(b["input_ids"]) for b in batch]
    assert lengths[1] + lengths[2] <= lengths[0]  # so two short samples fit in a row as long as the longest
    collator = PackedCollator(tok)
    packed = collator(batch)
    padded = CompletionCollator(tok)(batch)
    assert packed["input_ids"].shape[0] < len(batch)  # several samples share a row
    assert sorted(i for row in collator.rows(lengths) for i in row) == list(range(8))
    assert packed["input_ids"].shape[1] == padded["input_ids"].shape[1] == max(lengths)  # never wider
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"][:, 1:] != -100).sum())
    assert packed["input_ids"].numel() < padded["input_ids"].numel()  # fewer pad tokens computed

    def loss_and_grads(inputs):
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        return float(loss), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    loss_packed, grad_packed = loss_and_grads(packed)
    loss_padded, grad_padded = loss_and_grads(padded)
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
    assert torch.allclose(grad_packed, grad_padded, rtol=1e-3, atol=1e-6)

    running = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"]))
    cached = {k: v for k, v in packed.items() if k != "use_cache"}
    exact = abs(loss_packed - loss_padded)
    for leaky in (running, cached):  # (a random-weight model: the leak moves the loss little, but far more)
        with torch.no_grad():
            assert abs(float(model(**leaky).loss) - loss_padded) > 50 * max(exact, 1e-7), exact


def test_a_rerun_reuses_a_finished_stage_and_refuses_a_changed_one(peft_only, tiny_dir, data, tmp_path):
    """Rerunning notebook 03 after it finished must not train one more step (it used to come back at step
    N + 1): the same config, data, base and seed give back the finished run; anything else is refused, named."""
    cfg = _cfg(**{"stage1.max_steps": 4})
    out = tmp_path / "s1"
    first = train_stage("stage1", cfg.stage1, tiny_dir, [data / "ift"], out, cfg.model, progress=False)
    weights = out / "adapter" / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = train_stage("stage1", cfg.stage1, tiny_dir, [data / "ift"], out, cfg.model, progress=False)
    assert again.reused and not first.reused
    assert (again.global_step, again.final_loss, again.losses) == (first.global_step, first.final_loss, first.losses)
    assert again.validation_curve() == first.validation_curve() and again.validation_drop == first.validation_drop
    assert weights.stat().st_mtime_ns == stamp  # not trained, not rewritten

    changed = _cfg(**{"stage1.max_steps": 4, "stage1.learning_rate": 1e-3})
    with pytest.raises(TrainingError, match=r"different stage: delete that folder"):
        train_stage("stage1", changed.stage1, tiny_dir, [data / "ift"], out, changed.model, progress=False)
    with pytest.raises(TrainingError, match=r"different data"):
        train_stage("stage1", cfg.stage1, tiny_dir, [data / "mc"], out, cfg.model, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["parameters"]["identity"]  # a run made by an earlier version of the course
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainingError, match=r"from before the course recorded what a run was made with"):
        train_stage("stage1", cfg.stage1, tiny_dir, [data / "ift"], out, cfg.model, progress=False)

    merged = merge_adapter(tiny_dir, first.adapter_dir, tmp_path / "merged", dtype="float32")
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    assert merge_adapter(tiny_dir, first.adapter_dir, merged, dtype="float32") == merged
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp  # the same merge is kept, not redone


def test_a_run_folder_copied_elsewhere_is_still_the_same_run(peft_only, tiny_dir, data, tmp_path):
    """A whole run folder copied or moved (another disk, a Colab download, the browser test's copy): the copy's
    finished stage is reused from the copy, not refused as made with another base and data, nor pointed back at
    the original's adapter; a changed dataset in the copy is still refused."""
    import shutil

    cfg = _cfg(**{"stage1.max_steps": 2})
    run = tmp_path / "run"
    shutil.copytree(tiny_dir, run / "models" / "base")
    shutil.copytree(data / "ift", run / "01_generate_qa" / "ift")
    first = train_stage("stage1", cfg.stage1, run / "models" / "base", [run / "01_generate_qa" / "ift"],
                        run / "03" / "train", cfg.model, progress=False)  # fmt: skip
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(run)  # moved, not copied: nothing of the original is left to lean on
    again = train_stage("stage1", cfg.stage1, copy / "models" / "base", [copy / "01_generate_qa" / "ift"],
                        copy / "03" / "train", cfg.model, progress=False)  # fmt: skip
    assert again.reused and again.final_loss == first.final_loss
    assert again.adapter_dir == copy / "03" / "train" / "adapter" and again.out_dir == copy / "03" / "train"
    shutil.rmtree(copy / "01_generate_qa" / "ift")
    shutil.copytree(data / "mc", copy / "01_generate_qa" / "ift")
    with pytest.raises(TrainingError, match=r"different data"):
        train_stage("stage1", cfg.stage1, copy / "models" / "base", [copy / "01_generate_qa" / "ift"],
                    copy / "03" / "train", cfg.model, progress=False)  # fmt: skip


def test_an_interrupted_run_resumes_only_with_the_setup_it_was_started_with(peft_only, tiny_dir, data, tmp_path):
    """What a kill leaves (checkpoints and the identity written before the first step, no adapter, no manifest):
    a changed setup is refused before any model is loaded; the same setup resumes from the last checkpoint."""
    import shutil

    cfg = _cfg(**{"stage1.max_steps": 6, "stage1.save_steps": 3})
    out = tmp_path / "s1"
    train_stage("stage1", cfg.stage1, tiny_dir, [data / "ift"], out, cfg.model, progress=False)
    shutil.rmtree(out / "adapter")
    (out / "manifest.json").unlink()
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")  # killed between the checkpoints at steps 3 and 6
    assert json.loads((out / "run_identity.json").read_text())["stage"]["learning_rate"] == cfg.stage1.learning_rate

    changed = _cfg(**{"stage1.max_steps": 6, "stage1.save_steps": 3, "stage1.learning_rate": 1e-3})
    with pytest.raises(TrainingError, match=r"checkpoint-3 belongs to an interrupted stage1 run started with a "
                       r"different stage: delete .* to train from the start"):  # fmt: skip
        train_stage("stage1", changed.stage1, tiny_dir, [data / "ift"], out, changed.model, progress=False)
    resumed = train_stage("stage1", cfg.stage1, tiny_dir, [data / "ift"], out, cfg.model, progress=False)
    assert resumed.resumed_from == str(out / "checkpoints" / "checkpoint-3") and resumed.global_step == 6


@pytest.mark.parametrize("width", ["smoke", 384])
def test_a_4bit_stage_trains_the_same_after_a_validation_pass_on_any_cpu(peft_only, data, tmp_path, width):
    """Measuring the validation loss (eval mode, no gradients) before training must change neither whether the
    4-bit model runs nor the adapters' gradients. On a CPU with AVX512-BF16, bitsandbytes repacks 4-bit weights
    at such a pass: with the smoke model's 352-wide MLP it then failed outright, and with widths it accepts the
    gradients came out as far from the right ones as they are large (``keep_4bit_weights_trainable_on_cpu``).
    On other CPUs both runs take the same path and the test holds as well."""
    import torch

    from mmed_helpers.core.tiny import build_tiny_model
    from mmed_helpers.steps.train import CompletionCollator, load_for_training

    cfg = load_profile("smoke")
    shape = dataclasses.replace(cfg.tiny, pretrain_steps=0)  # the smoke shape, random weights (fast)
    if width == "smoke":
        assert shape.intermediate_size % 64 != 0  # the width bitsandbytes' repacking cannot take
    else:
        shape = dataclasses.replace(shape, intermediate_size=width)  # one it takes, with wrong gradients after
    model_dir = build_tiny_model(tmp_path / "tiny", shape, progress=False)

    def gradients(validate_first: bool):
        model, tok, backend = load_for_training(model_dir, cfg.stage2, cfg.model, seed=0)
        assert backend == "peft"
        gen = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_" in name:  # the same adapter in both runs; B non-zero, so every layer's output depends on it
                p.data = torch.randn(p.shape, generator=gen) * 0.1
        feats = tokenize_completions(load_sft_dataset([data / "mc"]).select(range(8)), tok, 256).select(range(3))
        batch = CompletionCollator(tok)([feats[i] for i in range(3)])
        if validate_first:
            assert validation_loss(model, feats, CompletionCollator(tok), batch_size=1).loss > 0
        model.train()
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, after_validation = gradients(False), gradients(True)
    assert plain.keys() == after_validation.keys() and len(plain) > 0
    for name in plain:
        assert torch.allclose(plain[name], after_validation[name], rtol=1e-4, atol=1e-7), name
