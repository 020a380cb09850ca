import json
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from mmed_helpers.core.artifacts import file_sha256
from mmed_helpers.core.config import TinyModelConfig
from mmed_helpers.core.corpus import load_corpus
from mmed_helpers.core.tiny import MARKER_FILE, build_tiny_model, is_tiny_model_dir

SAMPLES = {
    "en": "Chronic kidney disease is defined by a reduced glomerular filtration rate.",
    "zh": "慢性乙型肝炎是由乙型肝炎病毒持续感染引起的。",
    "ja": "アルツハイマー型認知症は記憶障害で始まることが多い。",
    "fr": "La migraine est une céphalée primaire fréquente.",
    "ru": "Эпилепсия представляет собой хроническое заболевание головного мозга.",
    "es": "La enfermedad de Parkinson es un trastorno neurodegenerativo.",
}


def test_same_seed_same_bytes(tiny_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", TinyModelConfig())
    assert file_sha256(again) == file_sha256(tiny_dir)


def test_other_seed_other_weights_same_tokenizer(tiny_dir, tmp_path):
    other = build_tiny_model(tmp_path / "other", TinyModelConfig(seed=1))
    assert file_sha256(other / "model.safetensors") != file_sha256(tiny_dir / "model.safetensors")
    assert file_sha256(other / "tokenizer.json") == file_sha256(tiny_dir / "tokenizer.json")


def test_existing_build_is_reused_and_foreign_dir_refused(tiny_copy, tmp_path):
    before = (tiny_copy / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tiny_copy, TinyModelConfig()) == tiny_copy
    assert (tiny_copy / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="not a tiny model built from this configuration"):
        build_tiny_model(tiny_copy, TinyModelConfig(hidden_size=32))
    rebuilt = build_tiny_model(tiny_copy, TinyModelConfig(hidden_size=32), overwrite=True)
    assert json.loads((rebuilt / "config.json").read_text())["hidden_size"] == 32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]  # no temp folders left


def test_shape_follows_config(tiny_dir):
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (64, 2, 2)
    assert is_tiny_model_dir(tiny_dir) and (tiny_dir / MARKER_FILE).is_file()


def test_offline_reload_with_auto_classes(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.num_parameters() > 0 and len(tok) == model.config.vocab_size
    ids = tok(SAMPLES["en"], return_tensors="pt")
    with torch.no_grad():
        a = model(**ids).logits
        b = AutoModelForCausalLM.from_pretrained(tiny_dir)(**ids).logits
    assert torch.equal(a, b)
    assert a.shape == (1, ids["input_ids"].shape[1], model.config.vocab_size)


@pytest.mark.parametrize("lang", list(SAMPLES))
def test_tokenizer_round_trips_every_language(tiny_dir, lang):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ids = tok(SAMPLES[lang])["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == SAMPLES[lang]


@pytest.mark.parametrize(
    "script, pattern",
    [
        ("latin", r"[a-zé]{2,}"),
        ("cjk", r"[\u4e00-\u9fff]{2,}"),
        ("kana", r"[\u3040-\u30ff]{2,}"),
        ("cyrillic", r"[\u0400-\u04ff]{2,}"),
    ],
)
def test_tokenizer_learned_merges_for_each_script(tiny_dir, script, pattern):
    """Coverage beyond bytes: the vocabulary holds multi-character pieces of every script."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    pieces = [tok.convert_tokens_to_string([t]) for t in tok.get_vocab()]
    learned = [p for p in pieces if re.fullmatch(r"\s?" + pattern, p)]
    assert len(learned) >= 20, (script, learned[:5])


def test_tokenizer_is_cheaper_than_bytes_on_the_corpus(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    for p in load_corpus():
        n_tokens = len(tok(p.text, add_special_tokens=False, verbose=False)["input_ids"])
        assert n_tokens < 0.5 * len(p.text.encode("utf-8")), p.id


def test_chat_template_and_assistant_mask(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    messages = [
        {"role": "user", "content": "What is CKD?"},
        {"role": "assistant", "content": "Kidney damage for over three months."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is CKD?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nKidney damage for over three months.<|eot_id|>"
    )
    out = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(ids) == "Kidney damage for over three months.<|eot_id|>"
    assert out["input_ids"].count(tok.bos_token_id) == 1
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert tok.eos_token == "<|eot_id|>" and tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id


def test_generation_stops_and_is_deterministic(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    a = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    b = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(a, b) and a.shape[1] > prompt["input_ids"].shape[1]


UNSLOTH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import unsloth  # noqa: F401  (before transformers)
    from unsloth import FastLanguageModel
    import torch
    from transformers import AutoModelForCausalLM
    path = sys.argv[1]
    model, tok = FastLanguageModel.from_pretrained(path, max_seq_length=128, dtype=torch.float32,
                                                   load_in_4bit=False)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tok("Эпилепсия 慢性乙型肝炎 Chronic kidney disease", return_tensors="pt")
    with torch.no_grad():
        diff = (model(**ids).logits - ref(**ids).logits).abs().max().item()
    print("RESULT=" + json.dumps({"diff": diff, "cls": type(model).__name__, "cuda": torch.cuda.is_available(),
                                  "pad": tok.pad_token}))
    """
)


def test_loads_with_unsloth_fast_language_model(tiny_dir):
    """In a subprocess: importing unsloth patches transformers for the whole process."""
    proc = subprocess.run(
        [sys.executable, "-c", UNSLOTH_SCRIPT, str(tiny_dir)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT="))
    result = json.loads(line.split("=", 1)[1])
    assert result["cls"] == "LlamaForCausalLM" and result["pad"] == "<|pad|>"
    assert result["diff"] < 1e-5
    if not result["cuda"]:
        assert "no GPU found, training on CPU" in proc.stdout + proc.stderr
