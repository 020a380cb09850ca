"""Memory-aware merge checks: every mode (full float32, full bfloat16, the first k layers in float32), forced
or chosen from a memory budget, passes a correct merge and catches a planted defect in a layer it checks; the
budget picks the mode; a budget too small for one layer skips the check."""

import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmed_helpers.core.config import TinyModelConfig, load_profile
from mmed_helpers.core.records import save_dataset, to_dataset
from mmed_helpers.core.tiny import build_tiny_model
from mmed_helpers.steps.generate import load_seeds
from mmed_helpers.steps.mergecheck import MERGE_CHECK_RTOL, _merge_check_memory, _merge_check_shape, merge_check
from mmed_helpers.steps.train import TrainingError, merge_adapter, train_stage

TEXTS = ["What defines chronic kidney disease?", "慢性乙型肝炎是什么？", "Что такое эпилепсия?"]
OLD_KEYS = {"max_abs_diff", "mean_abs_diff", "logit_mean_magnitude", "argmax_agreement", "adapter_effect_max"}
NEW_KEYS = {"mode", "dtype", "layers_checked", "layers_total", "memory_needed_bytes", "memory_available_bytes"}
NEW_KEYS |= {"logit_max_magnitude", "tolerance", "passed", "reason"}
# the smoke profile's tiny-model shape (random weights): 4 layers, each larger than the tied embeddings, so a
# budget below the full model in bfloat16 still fits a float32 layer or more
FOUR_LAYERS = TinyModelConfig(
    vocab_size=2048, hidden_size=128, intermediate_size=352, num_hidden_layers=4, tie_word_embeddings=True
)


def _trained(base, data, out) -> SimpleNamespace:
    """A DoRA adapter trained 6 steps on ``base`` (stage 1 of the smoke profile) and its float32 merge."""
    cfg = load_profile("smoke", {"stage1.max_steps": 6, "stage1.save_steps": 100})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMED_DISABLE_UNSLOTH", "1")
        result = train_stage("stage1", cfg.stage1, base, [data], out / "train", cfg.model, progress=False)
    merged = merge_adapter(base, result.adapter_dir, out / "merged", dtype="float32")
    return SimpleNamespace(base=base, adapter=result.adapter_dir, merged=merged)


@pytest.fixture(scope="module")
def ift(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ift"
    save_dataset(to_dataset(load_seeds("ift", ["en", "zh", "ru"]), "ift"), path)
    return path


@pytest.fixture(scope="module")
def two(tiny_dir, ift, tmp_path_factory):
    """The test fixture's tiny model (2 layers) with a trained, merged adapter."""
    return _trained(tiny_dir, ift, tmp_path_factory.mktemp("two"))


@pytest.fixture(scope="module")
def four(ift, tmp_path_factory):
    """A 4-layer tiny model with a trained, merged adapter."""
    root = tmp_path_factory.mktemp("four")
    return _trained(build_tiny_model(root / "model", FOUR_LAYERS, progress=False), ift, root)


def needs(m) -> dict:
    """What merge_check estimates each check needs on TEXTS (the same function it plans with)."""
    from transformers import AutoTokenizer

    batch = tuple(AutoTokenizer.from_pretrained(m.merged)(TEXTS, return_tensors="pt", padding=True)["input_ids"].shape)
    shape = _merge_check_shape(m.base, m.adapter, m.merged)
    total = shape["layers"]
    return {
        "full-float32": _merge_check_memory(shape, 4, total, batch),
        "full-bfloat16": _merge_check_memory(shape, 2, total, batch),
        "layers": {k: _merge_check_memory(shape, 4, k, batch) for k in range(1, total + 1)},
    }


def planted(m, dst, defect: str, layer: int = 0):
    """A copy of the merged model with one weight of decoder layer ``layer`` broken (the random tiny models'
    weights spread about 0.02): ``unmerged`` puts back the base's o_proj (the merge left that projection's adapter
    update out); ``noise`` adds 1e-2 * randn to q_proj; ``gross`` adds 5e-2 * randn to o_proj."""
    shutil.copytree(m.merged, dst)
    weights = load_file(dst / "model.safetensors")
    key = f"model.layers.{layer}.self_attn.{'q' if defect == 'noise' else 'o'}_proj.weight"
    if defect == "unmerged":
        weights[key] = load_file(m.base / "model.safetensors")[key].clone()
    else:
        noise = torch.randn(weights[key].shape, generator=torch.Generator().manual_seed(0))
        weights[key] = weights[key] + (1e-2 if defect == "noise" else 5e-2) * noise
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_plenty_of_memory_runs_the_full_float32_check(two):
    check = merge_check(two.base, two.adapter, two.merged, TEXTS)  # measures the free memory
    assert OLD_KEYS | NEW_KEYS <= set(check)
    assert (check["mode"], check["dtype"], check["layers_checked"], check["layers_total"]) == (
        "full-float32",
        "float32",
        2,
        2,
    )
    assert check["memory_needed_bytes"] == needs(two)["full-float32"] < check["memory_available_bytes"]
    assert check["passed"] is True and check["tolerance"] == 1e-4  # logits below 10: the absolute floor
    assert check["max_abs_diff"] < 1e-4 and check["argmax_agreement"] == 1.0  # what the smoke run asserts
    assert check["adapter_effect_max"] > 100 * check["max_abs_diff"]
    assert check["reason"].startswith("full float32 check: one model at a time needs")


def test_the_budget_picks_the_mode(four):
    n = needs(four)
    assert n["layers"][1] < n["full-bfloat16"] < n["full-float32"]  # the ladder this test walks down
    plan = {}
    for budget in (n["full-float32"], n["full-float32"] - 1, n["full-bfloat16"] - 1, n["layers"][1] - 1):
        check = merge_check(four.base, four.adapter, four.merged, TEXTS, memory_bytes=budget)
        plan[budget] = (check["mode"], check["layers_checked"])
        assert check["memory_available_bytes"] == budget
        if check["mode"] != "skipped":
            assert check["passed"] is True and check["memory_needed_bytes"] <= budget
    k = max(k for k, need in n["layers"].items() if need < n["full-bfloat16"])
    assert 1 <= k < 4
    assert list(plan.values()) == [("full-float32", 4), ("full-bfloat16", 4), ("layers-float32", k), ("skipped", 0)]


def test_too_little_memory_for_one_layer_skips_the_check(four):
    one_layer = needs(four)["layers"][1]
    check = merge_check(four.base, four.adapter, four.merged, TEXTS, memory_bytes=one_layer - 1)
    assert (check["mode"], check["dtype"], check["passed"], check["tolerance"]) == ("skipped", None, None, None)
    assert all(check[key] is None for key in OLD_KEYS)
    assert check["memory_needed_bytes"] == one_layer
    assert check["reason"].startswith("merge check skipped: even one layer in float32 needs")


# (mode, how it is reached, model); forced modes on the 2-layer fixture, budgets on the 4-layer model
CASES = [
    ("full-float32", "forced", "two"),
    ("full-bfloat16", "forced", "two"),
    ("layers-float32", "forced", "two"),
    ("full-float32", "budget", "four"),
    ("full-bfloat16", "budget", "four"),
    ("layers-float32", "budget", "four"),
]


@pytest.mark.parametrize(("mode", "how", "model"), CASES, ids=[f"{m}-{h}-{n}" for m, h, n in CASES])
def test_each_mode_passes_a_correct_merge_and_catches_a_defect(mode, how, model, request, tmp_path):
    m = request.getfixturevalue(model)
    n = needs(m)
    if how == "forced":
        # layers mode forced with no memory at all: one layer, run anyway, with a warning
        kwargs = {"mode": mode, "memory_bytes": 1 if mode == "layers-float32" else None}
    else:
        budget = {"full-float32": n["full-float32"], "full-bfloat16": n["full-float32"] - 1}
        kwargs = {"memory_bytes": budget.get(mode, n["full-bfloat16"] - 1)}

    def check(merged):
        if kwargs.get("memory_bytes") == 1:
            with pytest.warns(UserWarning, match="forced"):
                return merge_check(m.base, m.adapter, merged, TEXTS, **kwargs)
        return merge_check(m.base, m.adapter, merged, TEXTS, **kwargs)

    good = check(m.merged)
    assert good["mode"] == mode and good["passed"] is True
    assert good["max_abs_diff"] <= good["tolerance"] < good["adapter_effect_max"]
    if mode == "layers-float32":
        assert 1 <= good["layers_checked"] < good["layers_total"]
    else:
        assert good["layers_checked"] == good["layers_total"]
    if mode == "full-bfloat16":  # 16 units of bfloat16 rounding at the largest logit
        assert good["tolerance"] == MERGE_CHECK_RTOL["bfloat16"] * good["logit_max_magnitude"]
        assert good["max_abs_diff"] > 1e-4  # bfloat16 rounding shows: a float32 tolerance would fail it
    else:
        assert good["tolerance"] == 1e-4 and good["max_abs_diff"] < 1e-5

    # float32 resolves all three defects. bfloat16 resolves about 4 % of the largest logit: the gross one (4 to 5
    # times its tolerance), not the q_proj noise (0.001, a quarter of one bfloat16 rounding step at these logits)
    # nor, reliably, the unmerged o_proj (0.05 to 0.18 after 6 training steps, near the tolerance of 0.04-0.05).
    for defect in ("unmerged", "noise", "gross") if good["dtype"] == "float32" else ("gross",):
        bad = check(planted(m, tmp_path / defect, defect))
        assert (bad["mode"], bad["layers_checked"]) == (good["mode"], good["layers_checked"])
        assert bad["passed"] is False, (defect, bad)
        assert bad["max_abs_diff"] > 2 * bad["tolerance"], (defect, bad)


def test_layers_mode_does_not_see_later_layers(four, tmp_path):
    """The layers mode checks what it says: a defect beyond its k layers passes it, the full check fails it."""
    bad = planted(four, tmp_path / "bad", "unmerged", layer=3)
    budget = needs(four)["layers"][1]
    first = merge_check(four.base, four.adapter, bad, TEXTS, memory_bytes=budget)
    assert (first["mode"], first["layers_checked"], first["passed"]) == ("layers-float32", 1, True)
    full = merge_check(four.base, four.adapter, bad, TEXTS, mode="full-float32")
    assert full["passed"] is False and full["max_abs_diff"] > 100 * full["tolerance"]


def test_a_bfloat16_merge_is_judged_at_bfloat16_resolution(two, tmp_path):
    merged16 = merge_adapter(two.base, two.adapter, tmp_path / "merged16", dtype="bfloat16")
    check = merge_check(two.base, two.adapter, merged16, TEXTS)
    assert (check["mode"], check["passed"]) == ("full-float32", True)
    assert 1e-4 < check["max_abs_diff"] <= check["tolerance"]  # the merged weights' bfloat16 rounding
    assert check["tolerance"] == MERGE_CHECK_RTOL["bfloat16"] * check["logit_max_magnitude"]


def test_layers_mode_on_qwen2(tiny_dir, tmp_path):
    """Layers mode on the colab model's architecture (Qwen2: tied embeddings, per-layer ``layer_types``,
    q/k/v biases), with a random DoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    adapter = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, use_dora=True, init_lora_weights=False, target_modules=targets)
    )
    adapter.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    m = SimpleNamespace(base=tmp_path / "base", adapter=tmp_path / "adapter")
    m.merged = merge_adapter(m.base, m.adapter, tmp_path / "merged", dtype="float32")
    with pytest.warns(UserWarning, match="forced"):
        good = merge_check(m.base, m.adapter, m.merged, TEXTS, mode="layers-float32", memory_bytes=1)
    assert (good["mode"], good["layers_checked"], good["layers_total"], good["passed"]) == (
        "layers-float32",
        1,
        3,
        True,
    )
    with pytest.warns(UserWarning, match="forced"):
        bad = merge_check(
            m.base, m.adapter, planted(m, tmp_path / "bad", "unmerged"), TEXTS, mode="layers-float32", memory_bytes=1
        )
    assert bad["passed"] is False and bad["max_abs_diff"] > 3 * bad["tolerance"]


def test_a_checkpoint_missing_a_checked_weight_is_an_error(two, tmp_path):
    """transformers' load report is silenced for the skipped layers only: a weight missing from a layer that is
    checked (which transformers would fill with random values) raises, in every mode."""
    broken = tmp_path / "broken"
    shutil.copytree(two.merged, broken)
    weights = load_file(broken / "model.safetensors")
    del weights["model.layers.0.mlp.up_proj.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TrainingError, match=r"broken does not match its config \(1 weights: model.layers.0.mlp.up"):
        merge_check(two.base, two.adapter, broken, TEXTS)
    with pytest.warns(UserWarning, match="forced"), pytest.raises(TrainingError, match="does not match its config"):
        merge_check(two.base, two.adapter, broken, TEXTS, mode="layers-float32", memory_bytes=1)


def test_unknown_mode_or_device_is_refused(two):
    with pytest.raises(ValueError, match="merge_check mode 'fast'"):
        merge_check(two.base, two.adapter, two.merged, TEXTS, mode="fast")
    with pytest.raises(ValueError, match="merge_check device 'tpu'"):
        merge_check(two.base, two.adapter, two.merged, TEXTS, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA GPU is visible"):
            merge_check(two.base, two.adapter, two.merged, TEXTS, device="cuda")


def test_a_record_keeps_the_result_for_the_same_files_only(two, tmp_path):
    import json
    import os
    import shutil

    merged = tmp_path / "merged"
    shutil.copytree(two.merged, merged)
    record = tmp_path / "merge_check.json"
    first = merge_check(two.base, two.adapter, merged, TEXTS, record=record)
    assert first["passed"] is True and json.loads(record.read_text())["result"] == first
    kept = json.loads(record.read_text())
    kept["result"]["reason"] = "PLANTED"  # comes back only if the rerun reads the record instead of checking
    record.write_text(json.dumps(kept))
    assert merge_check(two.base, two.adapter, merged, TEXTS, record=record)["reason"] == "PLANTED"
    assert merge_check(two.base, two.adapter, merged, TEXTS[:1], record=record)["reason"] != "PLANTED"  # texts
    record.write_text(json.dumps(kept))
    weights = next(merged.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # another merge
    again = merge_check(two.base, two.adapter, merged, TEXTS, record=record)
    assert again["reason"] != "PLANTED" and again["passed"] is True
