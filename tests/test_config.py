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
