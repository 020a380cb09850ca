# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mmed-course/mmed-course/blob/main/notebooks/03_stage1_dora.ipynb)
#
# # 03 · Stage 1: DoRA fine-tuning on MMed-IFT, then merge
#
# Stage 1 injects general medical knowledge. The paper fine-tunes the base model with **DoRA** (weight-decomposed
# low-rank adaptation, **r = 32, α = 16**) on the general instruction set MMed-IFT — here notebook 01's set plus
# the translations that passed CCTS in notebook 02 — and then **merges** the adapter into the base, so stage 2
# starts from an ordinary model that already knows more medicine.
#
# **You will learn**
# - what DoRA adds to LoRA (a learned magnitude per output channel on top of the low-rank direction update), and
#   how few parameters it trains;
# - how chat records become training examples with the loss on the assistant's answer only;
# - how training survives interruption (checkpoints, resume), and how to check that a merge is exact.
#
# | profile | model | time for this notebook |
# | --- | --- | --- |
# | `smoke` | tiny Llama pre-trained in notebook 00, CPU (transformers + PEFT) | about a minute |
# | `colab` | 1.5B instruct, one 16 GB GPU | 10-20 minutes on a T4 (estimated) |
# | `full` | 8B instruct, one 40-80 GB GPU (≈ 17 GiB peak for DoRA at seq 2048 with Unsloth) | several hours |

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
overrides = {}      # e.g. {"stage1.max_steps": 50, "stage1.learning_rate": 5e-5}

# %%
import pandas as pd
from mmed_helpers.core.notebook import start

step = start("stage1", profile=profile, run_dir=run_dir or None, overrides=overrides)
cfg = step.cfg
print(f"profile {cfg.name!r}, writing to {step.out_dir}")

# %% [markdown]
# ## 1. The training data
#
# MMed-IFT from notebook 01 (seeds and generated items, six languages) plus the CCTS-filtered translations from
# notebook 02. Each record is a chat exchange; it is trained as *prompt → completion*, so the loss is computed only
# on the assistant's tokens (the answer and its end-of-turn token), not on the question.

# %%
from datasets import load_from_disk

data_paths = step.run.training_data("stage1")   # MMed-IFT + its kept translations
parts = {p.parent.name + "/" + p.name: load_from_disk(str(p)) for p in data_paths}
pd.DataFrame({name: pd.Series(ds["lang"]).value_counts() for name, ds in parts.items()}).fillna(0).astype(int)

# %% [markdown]
# One training example as the trainer sees it, token by token. Only the highlighted tokens (the answer and the
# end-of-turn token) carry the loss; the prompt — header tokens, question — is masked with -100.

# %%
from IPython.display import HTML
from transformers import AutoTokenizer
from mmed_helpers.plots import label_mask_html
from mmed_helpers.steps.train import label_mask, load_sft_dataset

tokenizer = AutoTokenizer.from_pretrained(step.run.base_model().path)
HTML(label_mask_html(label_mask(load_sft_dataset(data_paths[:1])[0], tokenizer, cfg.model.max_seq_length)))

# %% [markdown]
# **Packing.** Answers differ in length, so a padded batch spends compute on pad tokens. With `packing: true`
# (the default) short samples share a row instead, longest first, in rows no longer than the batch's longest
# sample (so the batch is never wider than the padded one). The samples stay apart: positions restart at 0 for
# each, so transformers gives every sample its own causal attention block, and no token is trained to predict the
# next sample's first token. The loss is the same as with padding (the tests compare loss and gradients); only pad
# tokens go. On a GPU, Unsloth flattens the whole batch into one row for its variable-length attention kernels.
# The course's records are all of similar length (about 180 to 450 tokens), so here packing saves little:
# `benchmarks/packing.py` measures it. One batch of this run's data, both ways:

# %%
from mmed_helpers.steps.train import CompletionCollator, PackedCollator, tokenize_completions

features = tokenize_completions(load_sft_dataset(data_paths), tokenizer, cfg.model.max_seq_length)
sample = [features[i] for i in range(min(cfg.stage1.per_device_train_batch_size, len(features)))]
packer = PackedCollator(tokenizer)
padded, packed = CompletionCollator(tokenizer)(sample), packer(sample)
real = sum(len(r["input_ids"]) for r in sample)
pd.DataFrame([("padded", *padded["input_ids"].shape, 1 - real / padded["input_ids"].numel()),
              ("packed", *packed["input_ids"].shape, 1 - real / packed["input_ids"].numel())],
             columns=["batch", "rows", "row length", "padding"]).style.format({"padding": "{:.0%}"}).hide(axis="index")

# %% [markdown]
# ## 2. The adapter
#
# LoRA learns a low-rank update $\Delta W = \frac{\alpha}{r} BA$ for each adapted weight. **DoRA** splits the
# adapted weight into a direction and a magnitude, $W' = m \cdot \frac{W + \Delta W}{\lVert W + \Delta W\rVert_c}$, and
# learns the magnitude vector $m$ too: closer to full fine-tuning for about the same parameter count. The paper
# uses r = 32, α = 16 on all attention and MLP projections.

# %%
pd.Series(vars(cfg.stage1), name="stage 1").to_frame()

# %% [markdown]
# ## 3. Train
#
# `train_stage` loads the base through Unsloth's `FastLanguageModel` on a CUDA GPU (on a CPU, or without Unsloth,
# through plain transformers + PEFT, said once), attaches the adapter and trains. A checkpoint is
# written every `save_steps`; **interrupt the kernel and run this cell again and training resumes from the last
# checkpoint** (the result says `resumed_from`). Run it again after it finished and the finished run is given back
# as it was (`reused: True`), not trained further; change a setting, the data or the base and it refuses, naming
# what changed (delete `03_stage1_dora/train/` to train again).
#
# Before training, `validation_fraction` of each language's records is held out (seeded, so a rerun holds out the
# same ones). Their loss per answer token is measured on the starting model, every `eval_steps`, and at the end:
# training loss says the model fits its batches, **validation loss says it learned something that carries over**
# to answers it has not seen.

# %%
from mmed_helpers.steps.train import train_stage

base = step.run.base_model()
result = train_stage("stage1", cfg.stage1, base.path, data_paths, step.run.stage1_train, cfg.model,
                     seed=cfg.seed, profile=cfg.name)
pd.Series(result.summary(), name="stage 1").to_frame()

# %%
from mmed_helpers.plots import plot_training

print(f"trainable parameters: {result.trainable_parameters:,} of {result.total_parameters:,} "
      f"({100 * result.trainable_parameters / result.total_parameters:.2f} %)")
print(f"validation loss: {result.validation_loss_base:.3f} (base) -> {result.validation_loss_final:.3f} "
      f"({result.validation_drop:.1%} lower) on {result.validation_examples} held-out records")
plot_training(result, "Stage 1 (DoRA) on MMed-IFT", save_to=step.out_dir / "loss.png");

# %% [markdown]
# On the `smoke` profile the base is the tiny model pre-trained in notebook 00 on the bundled passages; stage 1
# teaches it the answers' style, and the held-out validation loss falls about 2 % below the base's: far outside
# seed-to-seed noise (about ±0.2 points), and about what full fine-tuning on these 96 answers reaches, so it is
# the small data that limits it, not the adapter (the course's tests check the drop). It stays a tiny model: the loss is high in absolute terms. On a real
# model the loss falls quickly in the first hundred steps, then slowly.
#
# **Tracking.** The trainer also logs to TensorBoard (`stage1.report_to`, default `tensorboard`; `wandb`,
# `mlflow` or `none` are the alternatives), offline, into the stage's folder. In JupyterLab run
# `%load_ext tensorboard` and then `%tensorboard --logdir` with the folder printed below; from a shell,
# `tensorboard --logdir <folder>`.

# %%
print(step.run.training("stage1").tensorboard)

# %% [markdown]
# ## 4. Merge
#
# Stage 2 quantises its starting model to 4 bits. Merging first matters: a 4-bit base plus a 16-bit DoRA adapter
# would be a different model from the one trained here. `merge_adapter` folds the adapter into the weights with
# PEFT and saves an ordinary model directory. Then we check the merge: on the same inputs, the merged model's
# logits must match base + adapter (up to rounding), while differing clearly from the base.
#
# The check loads one model at a time and picks the most exact check that fits in the free memory: the whole
# model in float32; if that does not fit, the whole model in its own 16-bit type (a looser tolerance, since
# 16-bit numbers round coarsely); if even that does not fit, the first few layers in float32 (both models are cut
# to the same layers, and they must still agree). The cell prints which check ran and why.

# %%
from mmed_helpers.steps.mergecheck import merge_check
from mmed_helpers.steps.train import merge_adapter

merged_dir = step.run.stage1_merged
check = None
if cfg.stage1.merge:
    merge_adapter(base.path, result.adapter_dir, merged_dir, dtype=cfg.model.dtype)
    print(f"merged model: {merged_dir}")
    check = merge_check(base.path, result.adapter_dir, merged_dir,
                        ["What defines chronic kidney disease?", "慢性乙型肝炎是什么？", "Что такое эпилепсия?"],
                        record=step.run.stage1_merge_check)  # a rerun over the same files keeps the result
    print(check["reason"], "->", {True: "passed", False: "FAILED", None: "not run"}[check["passed"]])
    display(pd.Series(check, name="merged vs base + adapter").to_frame())

# %%
manifest = step.write_manifest(
    inputs={"base_model": base.path, **{f"data_{i}": p for i, p in enumerate(data_paths)}},
    outputs={"train": result.summary(), "merged": str(merged_dir) if cfg.stage1.merge else None,
             "merge_check": check, "losses": result.losses,
             "validation_loss_base": result.validation_loss_base,
             "validation_loss_final": result.validation_loss_final,
             "validation_by_language_base": result.validation_by_language_base,
             "validation_by_language_final": result.validation_by_language_final},
    this_run={"reused": result.reused},
)
print(f"wrote {manifest}")

# %% [markdown]
# ## Summary
#
# - Stage 1 trains a DoRA adapter (r = 32, α = 16) on all attention and MLP projections, with the loss on the
#   assistant's tokens, resumable from checkpoints.
# - The adapter is merged into the base; the check shows the merged model computes what base + adapter computed.
# - `merged/` is stage 2's starting point; `train/adapter/` and `train/manifest.json` record the run.
#
# ## Exercises
#
# 1. Rerun in a copy of the run folder with `overrides = {"stage1.method": "lora"}` (same r and α). How many
#    trainable parameters does DoRA add over LoRA, and where do they live? Check your number with the cell below.
#
# <details><summary>Answer</summary>
#
# (In the run itself the finished DoRA run is refused, "holds a finished stage1 run made with a different stage":
# hence the copy, or delete `03_stage1_dora/` there.) On the `smoke` profile LoRA trains 299,008 parameters and
# DoRA 303,872: DoRA adds **4,864** (1.6 %). They are the magnitude vectors, one number per output channel of each
# of the 28 adapted weights (7 projections × 4 layers): per layer 128 (q) + 64 (k) + 64 (v) + 128 (o) + 352 (gate)
# and 352 (up) + 128 (down), 1,216 in all. In `train/adapter/adapter_model.safetensors` they are the tensors named
# `...lora_magnitude_vector`, next to each layer's `lora_A` and `lora_B`. Their number does not depend on r; on
# Llama-3-8B they are about 1.4 million. What DoRA costs is time, not parameters: it recomputes the column norm of
# W + ΔW at every step, and Unsloth's fused LoRA kernels do not cover it.
#
# </details>
#
# 2. Delete `03_stage1_dora/train/` (or work in a copy of the run), run the training cell, interrupt it halfway
#    (Kernel → Interrupt) and run it again. Which step does it resume from, and what happened to the learning-rate
#    schedule?
#
# <details><summary>Answer</summary>
#
# It resumes from the last complete checkpoint, not from where it stopped: on the `smoke` profile a checkpoint is
# written every 40 steps (`save_steps`), so a run interrupted at step 63 resumes from `checkpoint-40`
# (`resumed_from` in the result) and redoes steps 41 to 63. The schedule goes on as if nothing happened: the
# checkpoint holds the optimiser's and the scheduler's state (and the random state), so step 41 trains at
# 0.01333, exactly the learning rate of an uninterrupted run (linear decay from 0.02 to 0 over 120 steps), and the
# data order continues where it was. Measured that way on this course's machine: the same learning rate at every
# step, and a final validation loss of 5.586 against 5.589 without the interruption, a difference the size of the
# run-to-run noise on a CPU.
#
# </details>
#
# 3. Merge in bfloat16 into another folder (`merge_adapter(base.path, result.adapter_dir, step.out_dir /
#    "merged_bf16", dtype="bfloat16")`) and run `merge_check` on it. How large is the difference now, and why does
#    the course check merges in float32?
#
# <details><summary>Answer</summary>
#
# On the `smoke` profile the bfloat16 merge differs from base + adapter by up to **0.0145** in the logits (mean
# 0.0021; logits average 2.1 in magnitude), against 3.8e-6 for the float32 merge: about 4,000 times more. The
# argmax still agrees on every token and the check passes, because its tolerance follows the saved dtype: 0.44 for
# bfloat16, 1e-4 for float32. bfloat16 keeps 8 bits of mantissa, about three significant digits, so rounding alone
# moves the logits by about 1e-2, and a tolerance loose enough for that hides a real merge error of the same size.
# In float32 a correct merge agrees to about 1e-6, so a difference above 1e-4 is a bug, not rounding (Unsloth's
# merged save once dropped DoRA's magnitudes). Merge into another folder: `merged/` is stage 2's starting
# point.
#
# </details>

# %%
# Exercise 1: put the difference in place of None and run this cell (a wrong answer gets a hint, not the answer)
from mmed_helpers.exercises import check_dora_extra_parameters

check_dora_extra_parameters(None, base.path)
