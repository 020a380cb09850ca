import json
import shutil

import pytest

from mmed_helpers.core.config import load_profile
from mmed_helpers.core.corpus import load_corpus
from mmed_helpers.core.layout import MissingArtifactError, RunLayout
from mmed_helpers.core.modeldir import BaseModelError, count_parameters, describe_model
from mmed_helpers.steps.setup import fetch_hub_model, prepare_base_model, tokenizer_fertility


def test_tiny_base_is_built_into_the_run_and_recorded(tmp_path):
    info = prepare_base_model(load_profile("smoke"), RunLayout(tmp_path))
    assert info.source == "tiny" and info.path == str(tmp_path / "models" / "base")
    assert json.loads((tmp_path / "base_model.json").read_text())["path"] == info.path
    assert RunLayout(tmp_path).base_model() == info


def test_local_directory_base(tiny_dir, tmp_path):
    info = prepare_base_model(load_profile("smoke", {"model.base_model": str(tiny_dir)}), RunLayout(tmp_path))
    assert (info.source, info.path) == ("local", str(tiny_dir))


def test_missing_local_directory_names_it(tmp_path):
    cfg = load_profile("smoke", {"model.base_model": str(tmp_path / "nope")})
    with pytest.raises(BaseModelError, match="model directory .*nope not found"):
        prepare_base_model(cfg, RunLayout(tmp_path))


def test_directory_without_weights_or_config_is_refused(tiny_copy):
    (tiny_copy / "model.safetensors").unlink()
    with pytest.raises(BaseModelError, match="has no weights"):
        describe_model(tiny_copy)
    (tiny_copy / "config.json").unlink()
    with pytest.raises(BaseModelError, match="no config.json"):
        describe_model(tiny_copy)


def _fake_hub_cache(cache, repo_id, model_dir):
    """Lay out a Hugging Face hub cache entry exactly as huggingface_hub writes one."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    shutil.copytree(model_dir, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def test_hub_id_resolves_from_the_local_cache_offline(tiny_dir, tmp_path):
    snap = _fake_hub_cache(tmp_path / "hub", "course-org/tiny-llama", tiny_dir)
    path = fetch_hub_model("course-org/tiny-llama", offline=True, cache_dir=tmp_path / "hub")
    assert path == snap


def test_hub_id_missing_offline_says_how_to_fix(tmp_path):
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache and the run is offline"):
        fetch_hub_model("course-org/absent", offline=True, cache_dir=tmp_path / "hub")


def test_resolve_before_setup_names_notebook_00(tmp_path):
    with pytest.raises(MissingArtifactError, match="run notebook 00_setup first"):
        RunLayout(tmp_path).base_model()


def test_describe_model_reads_headers_only(tiny_dir):
    from transformers import AutoModelForCausalLM

    facts = describe_model(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert facts["parameters"] == count_parameters(tiny_dir) == model.num_parameters()
    assert facts["architecture"] == "LlamaForCausalLM" and facts["layers"] == 2


def test_tokenizer_fertility_counts_tokens(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    passages = load_corpus(["en", "zh"])
    rows = {r["lang"]: r for r in tokenizer_fertility(tok, passages)}
    en = [p for p in passages if p.lang == "en"]
    assert rows["en"]["passages"] == len(en)
    assert rows["en"]["characters"] == sum(len(p.text) for p in en)
    expected = sum(len(tok(p.text, add_special_tokens=False, verbose=False)["input_ids"]) for p in en)
    assert rows["en"]["tokens"] == expected
    assert rows["en"]["tokens_per_100_chars"] == round(100 * expected / rows["en"]["characters"], 1)
