# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mmed-course/mmed-course/blob/main/notebooks/04_stage2_qlora.ipynb)
#
# # 04 · Stage 2: QLoRA fine-tuning on MMed-IFT-MC
#
# Stage 2 teaches the exam skill. The paper loads the merged stage-1 model in **4-bit NF4** and trains a **LoRA
# adapter (r = 16, α = 8)** on the multiple-choice set MMed-IFT-MC, where each target is the answer letter, the
# answer and a short rationale. Quantising the frozen base cuts its memory about four-fold, so this stage fits a
# much smaller GPU than stage 1.
#
# **You will learn**
# - what QLoRA quantises (the frozen base, to NF4 with double quantisation) and what it keeps in 16 bits (the
#   adapter, the activations, the optimizer state);
# - how the MC items are rendered for training (stem, lettered options, answer + rationale);
# - how the same API gives the single-stage ablation (stage 2's recipe applied directly to the base).
#
# | profile | model | time for this notebook |
# | --- | --- | --- |
# | `smoke` | merged tiny Llama in 4-bit NF4 on CPU (transformers + PEFT, bitsandbytes' CPU backend) | about a minute |
# | `colab` | merged 1.5B in 4-bit, one 16 GB GPU | 10-20 minutes on a T4 (estimated) |
# | `full` | merged 8B in 4-bit (≈ 6.5 GiB peak at seq 2048 with Unsloth) | a few hours |

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
overrides = {}      # e.g. {"stage2.max_steps": 50, "stage2.merge": True}

# %%
import pandas as pd
from mmed_helpers.core.notebook import start

step = start("stage2", profile=profile, run_dir=run_dir or None, overrides=overrides)
cfg = step.cfg
print(f"profile {cfg.name!r}, writing to {step.out_dir}")

# %% [markdown]
# ## 1. Start from stage 1
#
# Stage 2 needs the merged model written by notebook 03; without it, this cell stops with an error naming the
# notebook to run.

# %%
stage1_dir = step.run.require("stage1_merged")
print(f"starting from {stage1_dir}")

# %% [markdown]
# ## 2. The training data
#
# MMed-IFT-MC from notebook 01 plus its CCTS-filtered translations from notebook 02. One record as the model sees
# it in training:

# %%
from datasets import load_from_disk

data_paths = step.run.training_data("stage2")   # MMed-IFT-MC + its kept translations
parts = {p.name: load_from_disk(str(p)) for p in data_paths}
example = parts[data_paths[0].name][0]["messages"]
for m in example:
    print(f"[{m['role']}]\n{m['content']}\n")
pd.DataFrame({name: pd.Series(ds["lang"]).value_counts() for name, ds in parts.items()}).fillna(0).astype(int)

# %% [markdown]
# ## 3. QLoRA
#
# The frozen base is stored as 4-bit **NormalFloat** (NF4: 16 levels placed at the quantiles of a normal
# distribution, which is how trained weights are distributed), in blocks of 64 with their own scale, and the
# scales are quantised again (double quantisation). Matrix products dequantise on the fly to the compute dtype.
# The LoRA adapter on top (r = 16, α = 8) trains in full precision.

# %%
pd.Series(vars(cfg.stage2), name="stage 2").to_frame()

# %%
from mmed_helpers.steps.train import train_stage

result = train_stage("stage2", cfg.stage2, stage1_dir, data_paths, step.run.stage2_train, cfg.model,
                     seed=cfg.seed, profile=cfg.name)
print(f"4-bit linear layers: {result.quantized_layers}; trainable parameters: {result.trainable_parameters:,}")
pd.Series(result.summary(), name="stage 2").to_frame()

# %%
from mmed_helpers.plots import plot_training

print(f"validation loss: {result.validation_loss_base:.3f} (stage-1 model) -> {result.validation_loss_final:.3f} "
      f"({result.validation_drop:.1%} lower) on {result.validation_examples} held-out MC records")
plot_training(result, "Stage 2 (QLoRA) on MMed-IFT-MC", save_to=step.out_dir / "loss.png");

# %% [markdown]
# ## 4. Save for evaluation and serving
#
# The adapter in `train/adapter/` is what notebook 05 evaluates on top of the merged stage-1 model. With
# `stage2.merge: true` it is also merged into a full-precision copy (for serving with vLLM or similar, which
# prefer a plain model directory).

# %%
from mmed_helpers.steps.train import merge_adapter

merged_dir = step.run.stage2_merged
if cfg.stage2.merge:
    merge_adapter(stage1_dir, result.adapter_dir, merged_dir, dtype=cfg.model.dtype)
    print(f"merged model for serving: {merged_dir}")
manifest = step.write_manifest(
    inputs={"stage1_model": stage1_dir, **{f"data_{i}": p for i, p in enumerate(data_paths)}},
    outputs={"train": result.summary(), "merged": str(merged_dir) if cfg.stage2.merge else None,
             "losses": result.losses,
             "validation_loss_base": result.validation_loss_base,
             "validation_loss_final": result.validation_loss_final,
             "validation_by_language_base": result.validation_by_language_base,
             "validation_by_language_final": result.validation_by_language_final},
    this_run={"reused": result.reused},
)
print(f"wrote {manifest}")

# %% [markdown]
# ## 5. The single-stage ablation
#
# The paper compares the two-stage recipe with stage 2's recipe applied straight to the base model, skipping
# stage 1. It is the same call with the base model as the starting point (notebook 05 runs it for the comparison):
#
# ```python
# train_stage("single_stage", cfg.stage2, step.run.base_model().path, step.run.training_data("single_stage"),
#             step.run.single_stage_train, cfg.model, seed=cfg.seed)
# ```
#
# ## Summary
#
# - Stage 2 loads the merged stage-1 model in 4-bit NF4 and trains LoRA r = 16, α = 8 on the MC items (answer +
#   rationale targets), resumable like stage 1.
# - The adapter is saved for evaluation, and optionally merged for serving.
#
# ## Exercises
#
# 1. Count the bytes: for the `full` profile's 8B model, how much memory do the frozen weights take in bf16 and in
#    NF4 with double quantisation (about 4.13 bits per weight)? Compare with the peak figures in the README, and
#    check your two figures with the cell below.
#
# <details><summary>Answer</summary>
#
# Llama-3-8B has 8.03 billion parameters: 32 blocks of attention and MLP (6.98 billion, in linear layers), the
# embedding and the output layer (525 million each) and the norms. In bf16, 2 bytes each: **16.1 GB** (15.0 GiB).
# In 4-bit, bitsandbytes quantises only the blocks' linear layers: 6.98 × 10⁹ × 4.13 / 8 = 3.6 GB, while the
# embedding and the output layer stay in 16 bits, 1.05 × 10⁹ × 2 = 2.1 GB: **5.7 GB** (5.3 GiB) in all, not the
# 4.1 GB that 4.13 bits for every weight would give. The README's peaks (Unsloth, one H200, sequence 2048) sit
# above these floors: stage 1 (DoRA on bf16) 17.3 GiB = 15.0 GiB of weights + the adapter's weights, gradients and
# AdamW moments (about 85 million parameters × 16 bytes ≈ 1.4 GB) + activations; stage 2 (QLoRA) 6.5 GiB =
# 5.3 GiB + about 0.7 GB for its 42 million adapter parameters + activations. The 4-bit base is what brings an 8B model
# within reach of a 16-24 GB GPU.
#
# </details>
#
# 2. In a copy of the run folder, train with `overrides = {"stage2.load_in_4bit": False, "stage2.method": "lora"}`
#    (plain LoRA on the 16-bit merged model). How do wall time and memory compare on your machine?
#
# <details><summary>Answer</summary>
#
# On the `smoke` profile, measured on this course's 2-core CPU machine: plain LoRA 26-27 s and 0.85 GiB peak
# (process memory), QLoRA 31 s and 0.88 GiB. The 4-bit model saves nothing here and is slower: the tiny model's
# weights are about 4 MB in float32, the process memory is PyTorch itself, and bitsandbytes dequantises every
# layer at every step. Quantising also costs accuracy before any training: the validation loss of the starting
# model is 5.848 in 4-bit against 5.803 in float32. On a GPU with the 8B model the trade turns around: 5.7 GB of
# frozen weights instead of 16.1 GB (exercise 1), the difference between fitting a 16 GB GPU or not, for some
# speed. (In the run itself the finished QLoRA run is refused, "made with a different stage": hence the copy.)
#
# </details>
#
# 3. Look at one MC training target (`label_mask`, as in notebook 03): which tokens carry the loss, and why does
#    the rationale matter for a model that is only scored on the letter?
#
# <details><summary>Answer</summary>
#
# ```python
# from mmed_helpers.steps.train import label_mask, load_sft_dataset
# mask = label_mask(load_sft_dataset(data_paths[:1])[0], tokenizer, cfg.model.max_seq_length)
# ```
#
# (with `tokenizer = AutoTokenizer.from_pretrained(stage1_dir)`). Only the assistant's reply carries the loss: the
# answer line, `Answer: A. Right coronary artery`, then the rationale and the end-of-turn token; the chat headers,
# the question, its options and "Choose the single best answer." are masked. On the `smoke` profile the first
# record has 100 loss tokens of 256, and `max_seq_length` 256 cuts it inside the rationale (so its end-of-turn
# token is not trained; 105 of the 126 MC records reach 256 tokens there). The letter is one token of about a
# hundred. The rationale ("ST elevation in the inferior leads II, III and aVF indicates an inferior infarction
# ... right coronary artery occlusion") is where most of the training signal is: to predict it the model has to
# represent why A is right, which is the knowledge that carries over to new questions, where a letter-only
# target mostly teaches which letters are frequent. It also teaches the reply's shape, answer first and then the
# explanation, which the generation protocol of notebook 05 reads, and an explanation is what a clinician using
# the model needs to check it.
#
# </details>

# %%
# Exercise 1: put your two figures in GB in place of None and run this cell (a wrong answer gets a hint)
from mmed_helpers.exercises import check_frozen_weight_memory

check_frozen_weight_memory(None, None)
