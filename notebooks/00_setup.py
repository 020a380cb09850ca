# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mmed-course/mmed-course/blob/main/notebooks/00_setup.ipynb)
#
# # 00 · Set-up: your machine, your profile, your base model
#
# Before generating data or training anything, this notebook checks what the machine offers (a CUDA GPU or only a
# CPU, and how Unsloth will run on it), shows the **profile** every later notebook reads its settings from, and
# builds or locates the **base model** that stage 1 starts from. Everything it finds is written to the run
# directory, so the other notebooks (and you, later) can see exactly what this run was made with.
#
# **You will learn**
# - which parts of the recipe come from the paper (arXiv 2409.05732) and which are the course's choices;
# - how one profile drives the whole course, and how to override a single setting;
# - when Unsloth is used (a CUDA GPU) and what trains without one;
# - why tokenizers treat the six languages differently, and what that costs.
#
# | profile | hardware | time for this notebook |
# | --- | --- | --- |
# | `smoke` | any CPU, no network | seconds (builds the embedded tiny model) |
# | `colab` | one 16 GB GPU | a few minutes (downloads a 1.5B model once) |
# | `full` | one 40-80 GB GPU | 10-20 minutes (downloads an 8B model once) |

# %%
# Colab or Kaggle only: install the course (GPU extra) and use the `colab` profile, a few minutes
# once per session. Anywhere else this cell does nothing: install with `make venv` (see the README).
import os
import sys

if "google.colab" in sys.modules or {"COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"} & set(os.environ):
    import subprocess

    requirement = "mmed-course[gpu] @ git+https://github.com/mmed-course/mmed-course@main"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)
    os.environ.setdefault("MMED_PROFILE", "colab")

# %% tags=["parameters"]
# Parameters (papermill overrides these; in JupyterLab edit them here)
import os

profile = os.environ.get("MMED_PROFILE", "smoke")   # smoke | colab | full | path to your own YAML
run_dir = ""        # empty: runs/<profile> in the course checkout
overrides = {}      # e.g. {"model.base_model": "/models/my-llama"}

# %%
from mmed_helpers.core.notebook import start

step = start("setup", profile=profile, run_dir=run_dir or None, overrides=overrides)
cfg = step.cfg
print(f"profile {cfg.name!r}: {cfg.description}")
print(f"run directory: {step.run_dir}")

# %% [markdown]
# ## 1. The machine
#
# On a CUDA GPU, training in this course goes through [Unsloth](https://github.com/unslothai/unsloth)'s
# `FastLanguageModel`: its own fused kernels, faster and with far less memory. Without a GPU the same recipe runs on
# plain transformers + PEFT (+ bitsandbytes for stage 2's 4-bit base), so the `smoke` profile exercises every step
# on a laptop. Unsloth has no CPU kernels: its CPU fallback is the same transformers + PEFT code with extra
# patching, and measured about 4.5 times slower per QLoRA step here, so on a CPU the course does not use it
# (`MMED_TRAIN_BACKEND=unsloth` forces it, `MMED_TRAIN_BACKEND=peft` keeps it off a GPU too). Where Unsloth will be
# used, the report below imports it in a short-lived subprocess, because importing Unsloth patches transformers for
# the whole process.

# %%
import pandas as pd
from mmed_helpers.steps.setup import UnslothStatus, environment_report, report_rows

report = environment_report()
pd.DataFrame(report_rows(report), columns=["item", "value"]).style.hide(axis="index")

# %%
unsloth = UnslothStatus(**report["unsloth"])
print(unsloth.description)
if cfg.model.base_model != "tiny" and report["device"] != "cuda":
    print(f"WARNING: profile {cfg.name!r} is meant for a CUDA GPU ({cfg.hardware}); on this CPU it will be very slow.")

# %% [markdown]
# ## 2. The profile
#
# A profile is a YAML file of typed settings (`mmed_helpers/profiles/<name>.yaml`). The paper fixes the adapter
# recipe: stage 1 is **DoRA with r=32, alpha=16** on the general instruction set MMed-IFT, merged into the base;
# stage 2 is **QLoRA (4-bit NF4) with r=16, alpha=8** on the multiple-choice set MMed-IFT-MC; translations are kept
# when their **CCTS ≥ 0.8**. Learning rates, epochs, batch sizes and sequence length are not stated in the paper:
# they are the course's documented choices, and the `smoke` profile shrinks only the model and the amount of
# data and training, never the recipe. Any field can be overridden, from this notebook's `overrides` parameter or
# from the command line (`mmed-course run --set stage1.max_steps=50`); a misspelled key, a wrong
# type, a value outside its choices or range (`stage1.r=-4`, `ccts.threshold=7`) or a broken rule between fields
# (`qlora` without 4-bit) fails before anything runs, with one line naming the key, the value and what is allowed.

# %%
stages = pd.DataFrame({"stage 1 (MMed-IFT)": vars(cfg.stage1), "stage 2 (MMed-IFT-MC)": vars(cfg.stage2)})
stages

# %%
general = {
    "base model": cfg.model.base_model,
    "max sequence length": cfg.model.max_seq_length,
    "languages": ", ".join(cfg.languages),
    "CCTS threshold": cfg.ccts.threshold,
    "CCTS weights (BLEU / BERTScore)": f"{cfg.ccts.bleu_weight} / {cfg.ccts.bertscore_weight}",
    "benchmarks": ", ".join(cfg.evaluation.benchmarks),
    "offline": cfg.offline,
    "seed": cfg.seed,
}
pd.Series(general, name="value").to_frame()

# %% [markdown]
# ## 3. The base model
#
# With `model.base_model: tiny` (the `smoke` profile) the course builds its own model: a small Llama (four layers,
# about a million parameters) with a byte-level BPE tokenizer, both trained right here on the course's bundled
# medical passages in six languages. The model is **pre-trained from scratch** as a causal language model on those
# passages for a few hundred steps (a minute or two on two CPU cores), deterministically, and cached by a hash of
# its recipe, so later runs reuse it. It is a tiny model trained on our own text, about sixty passages: it has
# learned what the course's text looks like, not medicine, and the continuations below show how little it knows.
# Any other value of `model.base_model` is a local model directory or a Hugging Face id, taken from the local cache
# or downloaded once (Llama-3 models are gated: accept the licence on the Hub and run `hf auth login` first).

# %%
from dataclasses import asdict
from mmed_helpers.core.modeldir import describe_model
from mmed_helpers.steps.setup import prepare_base_model

base = prepare_base_model(cfg, step.run)
print(f"base model ({base.source}): {base.path}")
pd.Series(describe_model(base.path), name=cfg.model.base_model).to_frame()

# %% [markdown]
# ### What the tiny model learned in pre-training
#
# Its pre-training loss (cross-entropy per token on random windows of the passages) and, for each language, the
# opening of a passage with the model's greedy continuation beside what the passage really says. Expect the
# vocabulary and some phrases of the right language, not correct medicine.

# %%
from mmed_helpers.core.tiny import pretraining_log
from mmed_helpers.plots import plot_losses
from mmed_helpers.steps.setup import corpus_continuations

pretraining = pretraining_log(base.path)
if pretraining:
    print(f"{pretraining['parameters']:,} parameters, {pretraining['steps']} steps, "
          f"{pretraining['trained_tokens']:,} tokens ({pretraining['epochs']} passes over "
          f"{pretraining['corpus_tokens']:,}), {pretraining['seconds']} s")
    plot_losses({"pre-training": pretraining["losses"]}, save_to=step.out_dir / "pretraining_loss.png",
                ylabel="loss per token", title="Pre-training the tiny model on the bundled passages")
    from mmed_helpers.core.corpus import load_corpus
    display(pd.DataFrame(corpus_continuations(base.path, load_corpus(cfg.languages))))
else:
    print("not a pre-trained tiny model: nothing to show")

# %% [markdown]
# ### How the tokenizer sees each language
#
# Every step of the course pays per token, and the tokenizer decides how many tokens a text costs. Byte-level BPE
# can encode any string (unknown characters fall back to their UTF-8 bytes), but only scripts it learned merges
# for get compact tokens. Chinese and Japanese characters each carry roughly a syllable or a word, so about one
# token per character is a good result there; for Latin and Cyrillic text, fewer tokens per 100 characters means
# the tokenizer learned longer word pieces. Less compact languages fit less text into the context window and cost
# more per training example.

# %%
from transformers import AutoTokenizer
from mmed_helpers.core.corpus import load_corpus
from mmed_helpers.steps.setup import tokenizer_fertility
from mmed_helpers.plots import plot_fertility

tokenizer = AutoTokenizer.from_pretrained(base.path)
passages = load_corpus(cfg.languages)
fertility = tokenizer_fertility(tokenizer, passages)
plot_fertility(fertility, save_to=step.out_dir / "tokenizer_fertility.png")
pd.DataFrame(fertility)

# %% [markdown]
# ### The chat format
#
# Both training stages and the evaluation talk to the model in its chat template. Here is one exchange rendered
# as the model sees it; in training, the loss falls only on the assistant's part.

# %%
messages = [
    {"role": "system", "content": "You are a careful medical assistant."},
    {"role": "user", "content": "What defines chronic kidney disease?"},
    {"role": "assistant", "content": "Kidney damage or a GFR below 60 mL/min/1.73 m² for more than three months."},
]
print(tokenizer.apply_chat_template(messages, tokenize=False))

# %%
manifest = step.write_manifest(
    inputs={"base_model": base.path},
    outputs={"base_model": asdict(base), "model": describe_model(base.path), "environment": report,
             "tokenizer_fertility": fertility, "pretraining": pretraining},
)
print(f"wrote {manifest}")

# %% [markdown]
# ## Summary
#
# - The machine report says whether training will use Unsloth's GPU path or, without a GPU, transformers + PEFT.
# - The profile holds every setting; the paper's recipe (DoRA r=32/α=16, then QLoRA NF4 r=16/α=8, CCTS ≥ 0.8) is
#   the same in every profile.
# - The base model is built (smoke) or located, and recorded in `base_model.json` in the run directory for the
#   next notebooks.
#
# ## Exercises
#
# 1. Rerun this notebook with `overrides = {"tiny": {"vocab_size": 1024}}` and a fresh `run_dir` (for example
#    `"/tmp/mmed-vocab1024"`: a run keeps the base model it was built with). How do the tokens per 100 characters
#    change for each language, and which scripts lose most when the vocabulary shrinks? Why?
#
# <details><summary>Answer</summary>
#
# On the `smoke` profile (the bundled passages, vocabulary 2,048 → 1,024):
#
# | language | 2,048 tokens | 1,024 tokens | change |
# | --- | --- | --- | --- |
# | en | 33.7 | 43.1 | +28 % |
# | zh | 135.3 | 174.1 | +29 % |
# | ja | 120.4 | 159.1 | +32 % |
# | fr | 40.5 | 48.8 | +20 % |
# | ru | 52.4 | 64.9 | +24 % |
# | es | 40.9 | 48.5 | +19 % |
#
# Every language costs more, and Chinese and Japanese lose most: about 39 more tokens per 100 characters each.
# Byte-level BPE starts from the 256 byte values and spends its vocabulary on merges of the most frequent pairs in
# its training text. A Chinese or Japanese character is three UTF-8 bytes, so it needs two merges before it is one
# token, and the thousands of distinct characters in about 10,000 characters of Chinese and Japanese text are each
# rare: with half the merges, many of them fall back to two or three byte tokens (more than 100 tokens per 100
# characters means more than one token per character). French and Spanish share their alphabet and many word
# pieces with English, half of the training text, so they lose least; English itself loses its whole-word merges.
# Real tokenizers show the same pattern: a vocabulary built mostly on English text makes every Chinese or Japanese
# training example longer and fits less of it into the context window. In the run you already have, the notebook
# stops instead with "... exists but is not a tiny model built from this configuration": a run keeps its base.
#
# </details>
#
# 2. Try `overrides = {"stage1.rr": 8}`. Read the error: what does it tell you, and where would you look up the
#    valid keys? (`mmed-course show smoke` prints them all.)
#
# <details><summary>Answer</summary>
#
# `start` stops before anything runs, with `ConfigError: unknown key 'stage1.rr' in override of profile 'smoke'
# (did you mean 'stage1.r'?)`: the key, where it came from, and the nearest valid key. Every key is a field of a
# typed dataclass in `mmed_helpers/core/config.py` (the `stage1` and `stage2` sections are `StageConfig`, each
# field with its docstring); `mmed-course show smoke` prints the resolved profile, and
# `mmed_helpers/profiles/smoke.yaml` lists the values with comments. A wrong value fails the same way, before any
# work: `{"stage1.r": -4}` names the key, the value and what is allowed.
#
# </details>
#
# 3. Using `describe_model` (and `config.json` for the MLP width, `intermediate_size`), compute how many parameters
#    a DoRA adapter with r=32 on all attention and MLP projections adds to the tiny model (each adapted weight of
#    shape d_out × d_in gets r·(d_in + d_out) LoRA parameters plus d_out magnitude parameters). Check your count
#    with the cell below.
#
# <details><summary>Answer</summary>
#
# The tiny model has hidden size 128, MLP width 352, 4 attention heads of 32 and 2 key-value heads, so `k_proj` and
# `v_proj` have only 2 × 32 = 64 outputs (grouped-query attention). Per layer, r·(d_in + d_out) + d_out:
#
# | projection | d_in → d_out | parameters |
# | --- | --- | --- |
# | q_proj, o_proj | 128 → 128 | 32 · 256 + 128 = 8,320 each |
# | k_proj, v_proj | 128 → 64 | 32 · 192 + 64 = 6,208 each |
# | gate_proj, up_proj | 128 → 352 | 32 · 480 + 352 = 15,712 each |
# | down_proj | 352 → 128 | 32 · 480 + 128 = 15,488 |
#
# That is 75,968 per layer, **303,872** for the four layers (4,864 of them magnitudes): notebook 03 prints the
# same number of trainable parameters. It is 30 % of the tiny model's 1,000,576 parameters; on Llama-3-8B the same
# adapter is about 85 million, 1 % of the model (the Background chapter does that arithmetic).
#
# </details>

# %%
# Exercise 3: put your count in place of None and run this cell (a wrong answer gets a hint, not the answer)
from mmed_helpers.exercises import check_dora_parameters

check_dora_parameters(None, base.path)
