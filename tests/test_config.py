import pytest

from mmed_helpers.core.config import (
    LANGUAGES,
    ConfigError,
    Profile,
    apply_overrides,
    available_profiles,
    load_profile,
    parse_override,
)


def test_shipped_profiles_load():
    assert available_profiles() == ["colab", "full", "smoke"]
    for name in available_profiles():
        p = load_profile(name)
        assert isinstance(p, Profile) and p.name == name
        assert p.description and p.hardware and p.expected_time


@pytest.mark.parametrize("name", ["smoke", "colab", "full"])
def test_every_profile_keeps_the_papers_recipe(name):
    p = load_profile(name)
    assert (p.stage1.method, p.stage1.r, p.stage1.lora_alpha, p.stage1.load_in_4bit) == ("dora", 32, 16, False)
    assert (p.stage2.method, p.stage2.r, p.stage2.lora_alpha) == ("qlora", 16, 8)
    assert p.stage2.load_in_4bit and p.stage2.bnb_4bit_quant_type == "nf4"
    assert p.ccts.threshold == 0.8
    assert tuple(p.languages) == LANGUAGES == ("en", "zh", "ja", "fr", "ru", "es")
    assert set(p.evaluation.benchmarks) == {"medqa", "medmcqa", "pubmedqa", "mmedbench"}


def test_full_profile_is_an_8b_llama3_instruct():
    p = load_profile("full")
    assert p.model.base_model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert not p.offline


def test_smoke_profile_is_offline_and_tiny():
    p = load_profile("smoke")
    assert p.offline and p.model.base_model == "tiny"
    assert p.ccts.bertscore_model == "packaged-minilm"


def test_dotted_and_nested_overrides():
    p = load_profile("smoke", {"stage1.r": 8, "ccts": {"threshold": 0.5}, "languages": ["en", "zh"]})
    assert p.stage1.r == 8 and p.ccts.threshold == 0.5 and p.languages == ["en", "zh"]
    # untouched fields keep the profile's values
    assert p.stage1.lora_alpha == 16 and p.stage2.r == 16


def test_int_is_accepted_for_float_and_converted():
    p = load_profile("smoke", {"stage1.learning_rate": 1})
    assert p.stage1.learning_rate == 1.0 and isinstance(p.stage1.learning_rate, float)


def test_misspelled_key_fails_with_one_line_naming_key_and_profile():
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {"stage1.rr": 8})
    msg = str(err.value)
    assert "\n" not in msg
    assert "'stage1.rr'" in msg and "'smoke'" in msg and "did you mean 'stage1.r'" in msg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"stage1.r": "eight"}, "key 'stage1.r' in override of profile 'smoke' must be int, got str 'eight'"),
        ({"offline": 1}, "key 'offline' in override of profile 'smoke' must be bool"),
        ({"stage1.r": True}, "must be int, got bool"),
        ({"languages": "en"}, "key 'languages' in override of profile 'smoke' must be list[str]"),
        ({"languages": ["en", 3]}, "key 'languages[1]'"),
        ({"stage1": 5}, "key 'stage1' in override of profile 'smoke' is a section"),
        ({"nonsense": 1}, "unknown key 'nonsense' in override of profile 'smoke'"),
    ],
)
def test_wrong_types_fail_with_one_line(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", override)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_in_a_yaml_file_names_file_profile(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  base_modle: foo\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model.base_modle' in profile 'mine' \(did you mean"):
        load_profile(path)


def test_custom_yaml_profile_uses_defaults_for_missing_fields(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("description: mine\nstage1:\n  method: dora\n  r: 4\n")
    p = load_profile(path)
    assert p.name == "mine" and p.stage1.r == 4 and p.stage2 == Profile().stage2


def test_unknown_profile_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'smok'"):
        load_profile("smok")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(bad)
    listy = tmp_path / "listy.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_profile(listy)


def test_apply_overrides_returns_a_copy():
    p = load_profile("smoke")
    q = apply_overrides(p, {"seed": 7})
    assert q.seed == 7 and p.seed == 42


def test_flat_keys_are_the_override_keys():
    p = load_profile("full")
    flat = p.flat()
    assert flat["stage2.lora_alpha"] == 8 and flat["ccts.threshold"] == 0.8
    assert load_profile("full", {k: v for k, v in flat.items() if k != "name"}).to_dict() == p.to_dict()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("stage1.r=8", ("stage1.r", 8)),
        ("stage1.learning_rate=0.0001", ("stage1.learning_rate", 1e-4)),
        ("languages=[en, zh]", ("languages", ["en", "zh"])),
        ("model.base_model=/models/llama", ("model.base_model", "/models/llama")),
        ("offline=true", ("offline", True)),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_float_fields_accept_exponent_strings():
    # YAML 1.1 reads "1e-4" as a string; a float field still takes it
    assert load_profile("smoke", dict([parse_override("stage1.learning_rate=1e-4")])).stage1.learning_rate == 1e-4
    with pytest.raises(ConfigError, match="must be float, got str 'fast'"):
        load_profile("smoke", {"stage1.learning_rate": "fast"})


def test_parse_override_needs_equals():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("stage1.r")


# --------------------------------------------------------------------------- values: choices, ranges, rules

ISSUE_OVERRIDES = [  # tried as a new user would (issue 14): each must be refused, saying what is allowed
    ("datagen.batch_size=0", "key 'datagen.batch_size' in override of profile 'smoke' must be > 0, got 0"),
    ("ccts.threshold=7", "key 'ccts.threshold' in override of profile 'smoke' must be in [0, 1], got 7"),
    (
        "datagen.backend=opneai",
        "key 'datagen.backend' in override of profile 'smoke' must be one of 'local', 'openai', "
        "got 'opneai' (did you mean 'openai'?)",
    ),
    (
        "evaluation.protocols=[logllk]",
        "key 'evaluation.protocols[0]' in override of profile 'smoke' must be one of "
        "'loglik', 'generate', got 'logllk' (did you mean 'loglik'?)",
    ),
    ("stage1.r=-4", "key 'stage1.r' in override of profile 'smoke' must be > 0, got -4"),
]


@pytest.mark.parametrize("text, message", ISSUE_OVERRIDES, ids=[t for t, _ in ISSUE_OVERRIDES])
def test_the_issues_bad_values_are_refused_with_what_is_allowed(text, message):
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", dict([parse_override(text)]))
    assert str(err.value) == message


@pytest.mark.parametrize("text, message", ISSUE_OVERRIDES, ids=[t for t, _ in ISSUE_OVERRIDES])
def test_the_cli_refuses_them_before_any_run_folder_exists(text, message, tmp_path, capsys):
    from mmed_helpers.cli import main

    assert main(["run", "--profile", "smoke", "--run-dir", str(tmp_path / "run"), "--set", text]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "run").exists()


CHOICES = {  # every field with a fixed set of values: one allowed value, and what a typo gets back
    "model.dtype": ("bfloat16", "fp16"),
    "datagen.backend": ("local", "vllm"),
    "ccts.translator": ("llm", "google"),
    "ccts.seq2seq_style": ("m2m", "m2m100"),
    "ccts.score_form": ("mean", "max"),
    "ccts.calibration": ("fit", "fitted"),
    "stage1.method": ("lora", "dorA"),
    "stage2.bnb_4bit_quant_type": ("fp4", "int4"),
    "stage1.lr_scheduler_type": ("cosine_with_min_lr", "cosin"),
    "stage2.report_to": ("none", "tensorbord"),
    "evaluation.mmedbench_split": ("train", "dev"),
    "evaluation.pubmedqa_fold": ("all", "labelled"),
    "ccts.source_language": ("zh", "de"),
    "languages[0]": ("en", "english"),
    "evaluation.benchmarks[0]": ("medqa", "medqa_4options"),
    "evaluation.protocols[0]": ("generate", "gen"),
    "evaluation.models[0]": ("single_stage", "stage3"),
    "ablations.studies[0]": ("transfer", "ranks"),
    "ablations.protocols[0]": ("generate", "gen"),
}


def _override(key, value):
    if key.endswith("[0]"):
        return {key[:-3]: [value]}
    return {key: value}


@pytest.mark.parametrize("key", CHOICES)
def test_each_choice_field_takes_its_values_and_refuses_others(key):
    good, bad = CHOICES[key]
    companion = {"ccts.source_language": "en"} if key == "languages[0]" else {}
    load_profile("smoke", {**_override(key, good), **companion})
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {**_override(key, bad), **companion})
    msg = str(err.value)
    assert msg.startswith(f"key {key!r} in override of profile 'smoke' must be one of ") and f"got {bad!r}" in msg
    assert f"{good!r}" in msg and "\n" not in msg


RANGES = {  # key: (values allowed at the edges, values just outside, the rule the message states)
    "ccts.threshold": ([0.0, 1.0], [-0.01, 1.01], "in [0, 1]"),
    "ccts.bleu_weight": ([0.0, 1.0], [-0.5, 2.0], "in [0, 1]"),
    "ccts.bertscore_weight": ([0.0, 1.0], [1.5], "in [0, 1]"),
    "ccts.bleu_coef": ([0.0], [-1.0], ">= 0"),
    "ccts.bertscore_coef": ([0.0], [-0.1], ">= 0"),
    "datagen.support_threshold": ([0.0, 1.0], [1.2], "in [0, 1]"),
    "datagen.near_duplicate_threshold": ([0.0, 1.0], [-0.2], "in [0, 1]"),
    "datagen.temperature": ([0.0, 1.5], [-0.1], ">= 0"),
    "datagen.top_p": ([1.0, 0.05], [0.0, 1.1], "in (0, 1]"),
    "stage1.lora_dropout": ([0.0, 0.5], [1.0, -0.1], "in [0, 1)"),
    "stage1.validation_fraction": ([0.0, 0.5], [1.0], "in [0, 1)"),
    "stage2.warmup_ratio": ([0.0, 1.0], [1.5], "in [0, 1]"),
    "stage2.weight_decay": ([0.0], [-0.01], ">= 0"),
    "stage1.learning_rate": ([1e-6], [0.0, -1e-4], "> 0"),
    "stage1.num_train_epochs": ([0.5], [0.0], "> 0"),
    "tiny.pretrain_learning_rate": ([1e-3], [0.0], "> 0"),
    "stage1.r": ([1, 64], [0, -4], "> 0"),
    "stage2.lora_alpha": ([1], [0], "> 0"),
    "stage1.per_device_train_batch_size": ([1], [0], "> 0"),
    "stage1.gradient_accumulation_steps": ([1], [0], "> 0"),
    "stage1.logging_steps": ([1], [0], "> 0"),
    "stage1.save_steps": ([1], [0], "> 0"),
    "stage1.eval_steps": ([1], [0], "> 0"),
    "datagen.batch_size": ([1], [0, -8], "> 0"),
    "ccts.batch_size": ([1], [0], "> 0"),
    "evaluation.batch_size": ([1], [0], "> 0"),
    "datagen.max_new_tokens": ([1], [0], "> 0"),
    "ccts.max_new_tokens": ([1], [0], "> 0"),
    "evaluation.max_new_tokens": ([1], [0], "> 0"),
    "model.max_seq_length": ([16], [0], "> 0"),
    "ccts.bertscore_num_layers": ([1], [0], "> 0"),
    "tiny.pretrain_batch_size": ([1], [0], "> 0"),
    "tiny.pretrain_seq_length": ([8], [0], "> 0"),
    "tiny.num_hidden_layers": ([1], [0], "> 0"),
    "datagen.max_chars": ([100], [0], "> 0"),
    "datagen.passages_per_language": ([0], [-1], ">= 0"),
    "datagen.ift_per_passage": ([0], [-1], ">= 0"),
    "datagen.mc_per_passage": ([0], [-1], ">= 0"),
    "datagen.min_chars": ([0], [-1], ">= 0"),
    "ccts.max_source_samples": ([0], [-1], ">= 0"),
    "evaluation.max_items_per_benchmark": ([0], [-1], ">= 0"),
    "tiny.pretrain_steps": ([0], [-1], ">= 0"),
    "seed": ([0], [-1], ">= 0"),
    "ablations.steps": ([0, 1], [-1], ">= 0"),
    "ablations.max_items_per_benchmark": ([0], [-1], ">= 0"),
    "ablations.alpha_ratio": ([0.25, 2.0], [0.0, -0.5], "> 0"),
}


@pytest.mark.parametrize("key", RANGES)
def test_each_range_is_enforced_at_its_edges(key):
    good, bad, rule = RANGES[key]
    for value in good:
        assert load_profile("smoke", {key: value}).flat()[key] == value
    for value in bad:
        with pytest.raises(ConfigError) as err:
            load_profile("smoke", {key: value})
        assert str(err.value) == f"key {key!r} in override of profile 'smoke' must be {rule}, got {value!r}"


def test_max_steps_takes_the_minus_one_sentinel_and_nothing_else_below_one():
    assert load_profile("smoke", {"stage1.max_steps": -1}).stage1.max_steps == -1
    assert load_profile("smoke", {"stage1.max_steps": 1}).stage1.max_steps == 1
    for value in (0, -2):
        with pytest.raises(ConfigError, match=rf"'stage1.max_steps' .* must be >= 1, or -1 .*, got {value}$"):
            load_profile("smoke", {"stage1.max_steps": value})


@pytest.mark.parametrize(
    "override, message",
    [
        ({"languages": []}, "key 'languages' in override of profile 'smoke' must not be empty"),
        ({"languages": ["en", "zh", "en"]}, "key 'languages' in override of profile 'smoke' lists 'en' twice"),
        ({"evaluation.protocols": []}, "key 'evaluation.protocols' in override of profile 'smoke' must not be empty"),
        ({"evaluation.benchmarks": []}, "must not be empty"),
        ({"evaluation.models": ["base", "base"]}, "lists 'base' twice"),
        ({"stage1.target_modules": []}, "key 'stage1.target_modules' in override of profile 'smoke' must not be"),
        ({"stage1.target_modules": ["q_proj", ""]}, "key 'stage1.target_modules[1]' in override"),
        ({"model.base_model": ""}, "key 'model.base_model' in override of profile 'smoke' must not be empty"),
        ({"datagen.api_key_env": ""}, "must not be empty"),
        ({"evaluation.medqa_source": ""}, "must not be empty"),
        (
            {"ablations.studies": ["rank", "rank"]},
            "key 'ablations.studies' in override of profile 'smoke' lists 'rank'",
        ),
        (
            {"ablations.stage1_ranks": [8, 8]},
            "key 'ablations.stage1_ranks' in override of profile 'smoke' lists 8 twice",
        ),
        (
            {"ablations.stage2_ranks": []},
            "key 'ablations.stage2_ranks' in override of profile 'smoke' must not be empty",
        ),
        ({"ablations.stage2_ranks": [0]}, "key 'ablations.stage2_ranks[0]' in override of profile 'smoke' must be > 0"),
        (
            {"ablations.thresholds": [0.7, 1.5]},
            "key 'ablations.thresholds[1]' in override of profile 'smoke' must be in",
        ),
        ({"ablations.protocols": []}, "key 'ablations.protocols' in override of profile 'smoke' must not be empty"),
    ],
)
def test_lists_and_names_must_not_be_empty_or_repeat(override, message):
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", override)
    assert message in str(err.value) and "\n" not in str(err.value)


CROSS_FIELD = [
    (
        {"stage2.load_in_4bit": False},
        "key 'stage2.method' in override of profile 'smoke' is 'qlora' (LoRA on a "
        "4-bit base), which needs stage2.load_in_4bit: true",
    ),
    ({"stage1.method": "qlora"}, "key 'stage1.method' in override of profile 'smoke' is 'qlora'"),
    (
        {"languages": ["zh", "ja"]},
        "key 'ccts.source_language' in override of profile 'smoke' is 'en', which is not among languages ['zh', 'ja']",
    ),
    (
        {"datagen.min_chars": 50, "datagen.max_chars": 40},
        "key 'datagen.max_chars' in override of profile 'smoke' is 40, below datagen.min_chars 50",
    ),
    (
        {"datagen.backend": "openai"},
        "key 'datagen.endpoint_url' in override of profile 'smoke' is empty, but datagen.backend is 'openai'",
    ),
    (
        {"ccts.translator": "seq2seq"},
        "key 'ccts.translator_model' in override of profile 'smoke' is empty, but ccts.translator is 'seq2seq'",
    ),
    (
        {"ccts.score_form": "mean", "ccts.bleu_weight": 0, "ccts.bertscore_weight": 0},
        "key 'ccts.bleu_weight' in override of profile 'smoke' and ccts.bertscore_weight are both 0",
    ),
    (
        {"tiny.hidden_size": 130},
        "key 'tiny.hidden_size' in override of profile 'smoke' is 130: it must be "
        "num_attention_heads (4) times an even head size",
    ),
    ({"tiny.hidden_size": 12}, "times an even head size"),  # head size 3: rotary embeddings need an even one
    (
        {"tiny.num_key_value_heads": 3},
        "key 'tiny.num_key_value_heads' in override of profile 'smoke' is 3, which "
        "does not divide num_attention_heads (4)",
    ),
    (
        {"tiny.max_position_embeddings": 128},
        "key 'tiny.max_position_embeddings' in override of profile 'smoke' is 128, below model.max_seq_length (256)",
    ),
]


@pytest.mark.parametrize("override, message", CROSS_FIELD, ids=[",".join(o) for o, _ in CROSS_FIELD])
def test_cross_field_rules(override, message):
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", override)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_same_values_pass_when_their_companion_is_set():
    load_profile("smoke", {"stage1.method": "qlora", "stage1.load_in_4bit": True})
    load_profile("smoke", {"languages": ["zh", "ja"], "ccts.source_language": "zh"})
    load_profile("smoke", {"datagen.backend": "openai", "datagen.endpoint_url": "http://127.0.0.1:8000/v1"})
    load_profile("smoke", {"ccts.translator": "seq2seq", "ccts.translator_model": "facebook/nllb-200-distilled-600M"})
    load_profile("smoke", {"tiny.max_position_embeddings": 128, "model.max_seq_length": 128})
    load_profile("full", {"tiny.max_position_embeddings": 128})  # the tiny shape is unused with a real base


def test_a_yaml_file_with_a_bad_value_names_the_file_profile(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("ccts:\n  threshold: 1.5\nstage1:\n  r: 0\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert str(err.value) == "key 'ccts.threshold' in profile 'mine' must be in [0, 1], got 1.5 (and 1 more problem)"


def test_scheduler_names_are_transformers_own():
    from transformers.trainer_utils import SchedulerType

    from mmed_helpers.core.config import SCHEDULERS

    assert SCHEDULERS == tuple(s.value for s in SchedulerType)


def test_every_dtype_choice_is_a_torch_dtype_and_every_report_to_a_trainer_integration():
    import torch
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from mmed_helpers.core.config import DTYPES, REPORT_TO
    from mmed_helpers.core.device import resolve_dtype

    assert all(isinstance(resolve_dtype(d, "cpu"), torch.dtype) for d in DTYPES)
    assert set(REPORT_TO) - {"none"} <= set(INTEGRATION_TO_CALLBACK)


def test_the_steps_use_the_profiles_vocabulary():
    from mmed_helpers.core.config import EVAL_MODELS, SEQ2SEQ_STYLES
    from mmed_helpers.steps import benchmarks, evaluate, translate

    assert set(evaluate.MODELS) == set(EVAL_MODELS)
    assert translate.Seq2SeqTranslator.STYLES == SEQ2SEQ_STYLES
    assert set(benchmarks.BUNDLED) == set(benchmarks.HUB) == set(Profile().evaluation.benchmarks)


def test_the_modules_examples_hold():
    import doctest

    import mmed_helpers.core.config as config

    assert doctest.testmod(config).failed == 0


def test_every_profile_declares_its_ablation_grid():
    """Each shipped YAML states every key of its ``ablations`` section (nothing left to a default a reader cannot
    see): smoke runs all four studies at matched steps, colab and full a subset at the stages' own steps with the
    GPU time it is expected to take, marked estimated."""
    import dataclasses

    import yaml

    from mmed_helpers.core.config import STUDIES, AblationConfig
    from mmed_helpers.core.layout import PROFILE_DIR

    keys = {f.name for f in dataclasses.fields(AblationConfig)}
    for name in available_profiles():
        text = (PROFILE_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        assert set(yaml.safe_load(text)["ablations"]) == keys, name
        header = next(line for line in text.splitlines() if line.startswith("ablations:"))
        a = load_profile(name).ablations
        assert a.alpha_ratio == 0.5 and 0.8 in a.thresholds and a.protocols == ["loglik"]
        if name == "smoke":
            assert tuple(a.studies) == STUDIES and a.steps > 0
        else:
            assert 0 < len(a.studies) < len(STUDIES) and a.steps == 0, name
            assert "hours" in header and "estimated" in header, name


def test_an_empty_ablation_grid_is_allowed():
    assert load_profile("smoke", {"ablations.studies": []}).ablations.studies == []
