# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mmed-course/mmed-course/blob/main/notebooks/06_ablations.ipynb)
#
# # 06 · Ablations: what each stage, the rank, the CCTS filter and English-only data contribute
#
# The paper names its own next checks: single-stage fine-tuning against the two stages; the LoRA rank of each
# stage; the CCTS threshold (0.7, 0.8, 0.9), which trades dataset size against translation quality; and
# cross-lingual transfer (English-only knowledge in stage 1, questions in other languages). This notebook runs
# them as a declared grid of **variants** through the same training and evaluation API as notebooks 03-05. Every
# variant is scored on the same items and compared item by item with its reference, and its cost (trainable
# parameters, wall time, peak memory) stands beside its accuracy. Nothing of the recipe is trained again: the base,
# stage 1, stage 2 and the single-stage model come from notebooks 00-05. The last section puts the paper's Open
# Question 1, the two stages against continual pre-training, on paper.
#
# **You will learn**
# - how to declare an ablation grid and run it resumably, reusing every model already trained;
# - why a fair comparison needs the same items, matched steps and a paired test, not two accuracies side by side;
# - what a higher rank, a stricter CCTS threshold or English-only stage-1 data cost and buy;
# - how the two stages' compute compares with continual pre-training at the same model size.
#
# | profile | the grid (profile section `ablations`) | time for this notebook |
# | --- | --- | --- |
# | `smoke` | all four studies; rank and transfer variants at 30 matched steps; log-likelihood on notebook 05's items | about a minute on a CPU |
# | `colab` | stages + rank (stage-1 r 16/32/64, stage-2 r 8/16/32) at the stages' own steps; 100 items per set | 1-2 hours on a T4 (estimated) |
# | `full` | stages + CCTS thresholds 0.7/0.8/0.9 at the stages' own steps; 500 items per set | 15-25 GPU hours (estimated) |

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
overrides = {}      # e.g. {"ablations.studies": ["rank"], "ablations.stage1_ranks": [8, 64], "ablations.steps": 60}

# %%
import pandas as pd
from mmed_helpers.core.notebook import start

step = start("ablations", profile=profile, run_dir=run_dir or None, overrides=overrides)
cfg, ab = step.cfg, step.cfg.ablations
print(f"profile {cfg.name!r}, writing to {step.out_dir}")
print(f"studies: {ab.studies}; matched steps for rank and transfer: {ab.steps or 'the stages own'}")

# %% [markdown]
# ## 1. The grid
#
# Each study is a list of variants; each variant says what model it is, what it trains and which variant it is
# compared with:
#
# - **stages** — the base, the recipe's stage 1 alone, stage 2 alone on the base (notebook 05's single-stage
#   model), both stages (the recipe), and stage 1 trained without the translated data;
# - **rank** — stage 1 alone at r = 8, 16, 32, 64 and stage 2 (on the recipe's merged stage 1) at r = 8, 16, 32,
#   with α = r/2 as in the paper (32/16, 16/8);
# - **CCTS threshold** — both stages retrained on the translations notebook 02 keeps at 0.7, 0.9 or with no filter
#   at all (0.8 is the recipe);
# - **transfer** — stage 1 on the English records only, against stage 1 on all six languages.
#
# A variant whose training equals the recipe's — the same stage settings, the same training examples, the same
# starting model — *is* the recipe's model, so it is reused, not retrained: on `smoke`, where no translation
# passes CCTS, "stage 1 without translations" and every threshold are exactly the recipe. **Matched steps**: a
# rank or transfer variant is compared with the recipe's ranks trained for the *same* number of steps
# (`ablations.steps`; `smoke` uses 30 to stay within the course's five minutes, `colab` and `full` the stages' own,
# where those references are the recipe's models). The last column is the training time to expect at most,
# scaled from this run's own stage 1 and stage 2.

# %%
from mmed_helpers.steps.ablations import plan_table, plan_variants

plan = plan_variants(cfg)
with pd.option_context("display.max_colwidth", 90):
    display(pd.DataFrame(plan_table(plan, cfg, step.run)).set_index("variant"))

# %% [markdown]
# ## 2. The same items for every variant
#
# Every variant answers the same questions: notebook 05's items (its benchmarks, sources and cap, drawn with the
# profile's seed), or a seeded subset of them (`ablations.max_items_per_benchmark`). Where notebook 05 already
# scored the same model on these items, its answers are reused. Variants are scored with `ablations.protocols`:
# log-likelihood by default, the cheap protocol that needs no answer format, so a stage-1 model and a two-stage
# model are measured the same way. A paired comparison on different items would compare the items, not the models:
# the comparison below refuses it.

# %%
from mmed_helpers.steps.ablations import prepare

ctx = prepare(cfg, step.run)
print(f"{len(ctx.items)} items of notebook 05's {len(ctx.scored_items)}; protocols {list(ab.protocols)}")
items = pd.DataFrame([(it.benchmark, it.lang) for it in ctx.items], columns=["benchmark", "lang"])
items.value_counts().unstack(fill_value=0)

# %% [markdown]
# ## 3. The data of the CCTS study
#
# Notebook 02 stored every round trip's score (`scores.jsonl`) and every translation, so another threshold costs
# no translation: a pair is kept at threshold *t* when notebook 02 decided it by the threshold and its CCTS is at
# least *t*; the other checks (a failed or untranslated round trip, a meaning change) hold at any threshold, and a
# pair newly admitted is checked against the benchmarks as in notebook 02. *No filter* keeps every complete
# translation. The table counts, per dataset and target language, the round trips and what each threshold keeps.

# %%
from mmed_helpers.steps.ablations import kept_counts, threshold_label

thresholds = [*sorted({*ab.thresholds, cfg.ccts.threshold}), *([None] if ab.no_filter else [])]
if "ccts" in ab.studies:
    kept = pd.DataFrame(kept_counts(ctx, thresholds))
    display(kept.pivot_table(index=["kind", "lang"], columns="threshold", values="kept", aggfunc="sum")
            .join(kept.groupby(["kind", "lang"])["round trips"].first()))
    print(f"thresholds {[threshold_label(t) for t in thresholds]}")

# %% [markdown]
# On `smoke` the translator is the tiny model, whose translations are empty or noise: every round trip failed, so
# every threshold — and even no filter — keeps nothing, the training sets are the recipe's, and the CCTS variants
# are the recipe's models (the results table says so under *reuses*). That is an honest result, not a skipped
# study: with a real translator the counts fall as the threshold rises and each threshold trains its own two
# stages.
#
# ## 4. Train and score every variant
#
# `run_variant` builds the variant's data in its folder (`06_ablations/variants/<name>/`), reuses the recipe's
# trainings where it can, trains the rest with `train_stage` (merging a new stage 1 with `merge_adapter` before a
# stage 2 on it), scores it, and writes the variant's `manifest.json`. Interrupt it and run the cell again: finished
# trainings and stored scores are kept (a training resumes from its last checkpoint). The trainer's per-step log
# stays out of the notebook; each training's TensorBoard log is in its folder.

# %%
from tqdm.auto import tqdm
from mmed_helpers.steps.ablations import run_variant

outcomes = {}
for v in tqdm(plan, desc="variants", unit="variant"):
    o = run_variant(v, ctx, progress=False)
    outcomes[v.name] = o
    print(f"{v.name}: trained now {o.trained_now or 'nothing'}; reuses {'; '.join(o.reuses) or 'nothing'}; "
          f"answers: {o.scored}")

# %% [markdown]
# ## 5. Results
#
# One row per variant, all benchmarks and languages pooled: accuracy with its 95 % Wilson interval, the difference
# from its reference with the exact McNemar p-value on the paired items (where that reference is a matched
# variant, the same against the recipe itself beside it), and what it cost. On `smoke` the models
# are tiny and the sets small: the accuracies sit near chance, the intervals span about ±7 points and no
# difference is evidence — the numbers show that every piece runs, the *method* is the lesson. On a real model
# read the p-values before the differences. Peak memory is the GPU's allocated peak on a GPU; on a CPU it is the
# process's peak RSS so far, which only grows within one kernel (compare it on a GPU).

# %%
from mmed_helpers.steps.ablations import RECIPE, comparisons, main_protocol, results_table

protocol = main_protocol(ab.protocols)
compared = comparisons(outcomes)   # refuses a variant scored on other items than its reference
versus_recipe = comparisons(outcomes, against=RECIPE) if RECIPE in outcomes else {}
table = pd.DataFrame(results_table(outcomes, compared, protocol, versus_recipe)).set_index("variant")
table.style.format({"accuracy": "{:.3f}", "difference": "{:+.3f}", "p (McNemar)": "{:.3f}",
                    "difference from recipe": "{:+.3f}", "p vs recipe": "{:.3f}",
                    "trainable parameters": "{:,}", "training wall s": "{:.1f}", "peak memory GiB": "{:.2f}"},
                   na_rep="-")

# %% [markdown]
# Per benchmark and language, every variant against its reference (the `all` rows pool them):

# %%
tests = pd.DataFrame([{"variant": name, **row} for name, rows in compared.items() for row in rows])
if len(tests):
    display(tests[(tests.protocol == protocol) & (tests.lang == "all")]
            .pivot_table(index="variant", columns="benchmark", values="p_value", aggfunc="first").round(3)
            .style.set_caption("exact McNemar p-value against the reference, per benchmark"))

# %% [markdown]
# ### Rank, threshold, transfer
#
# Accuracy against the rank of each stage (labels: trainable parameters), against the CCTS threshold (grey bars:
# the translations each stage trained on), and per language for the transfer study (MMedBench, where every
# language has its own items).

# %%
from mmed_helpers.plots import plot_accuracy, plot_accuracy_vs_rank, plot_accuracy_vs_threshold
from mmed_helpers.steps.ablations import accuracy_rows, language_rows, rank_points, threshold_points

if "rank" in ab.studies:
    plot_accuracy_vs_rank(rank_points(outcomes, cfg, protocol), save_to=step.out_dir / "accuracy_vs_rank.png")
if "ccts" in ab.studies:
    plot_accuracy_vs_threshold(threshold_points(outcomes, cfg, protocol),
                               save_to=step.out_dir / "accuracy_vs_threshold.png")
if "transfer" in ab.studies:
    transfer = [v.name for v in plan if "transfer" in v.studies and v.model == "stage1" and v.name != "stage1"]
    plot_accuracy(language_rows(outcomes, transfer, protocol), "lang", f"Cross-lingual transfer ({protocol})",
                  save_to=step.out_dir / "transfer_by_language.png", models=transfer)
if "stages" in ab.studies:
    stages = [n for n in ("base", "stage1", "stage1_no_translations", "stage2_only", "recipe") if n in outcomes]
    rows = [{"model": n, **r} for n in stages for r in accuracy_rows(outcomes[n].results)
            if r["lang"] == "all" and r["protocol"] == protocol]
    plot_accuracy(rows, "benchmark", f"What each stage contributes ({protocol})",
                  save_to=step.out_dir / "stages_by_benchmark.png", models=stages);

# %% [markdown]
# ## 6. Open Question 1 on paper: two stages against continual pre-training
#
# MMed-Llama 3, the model the paper measures itself against, was made by **continual pre-training** on MMedC, a
# multilingual medical corpus of about 25.5 billion tokens. The paper's question: how does the two-stage recipe's
# compute compare? Without running it, from the course's own measured throughput: the tokens each stage trained on
# and its wall time (from the stage's training record; where the trainer did not count tokens, as on the CPU path,
# they are estimated as steps × batch × the mean tokens of a training example), and for pre-training the same
# model on MMedC, stage 1's tokens per second divided by 1.5 — **an assumption**: full-parameter training also
# computes the weights' gradients, about 6N instead of 4N FLOPs per token for N parameters. The second table does
# the same at the paper's scale: its "over 200k" samples, **assumed** 400 tokens each, split evenly between the
# stages, trained for the `full` profile's epochs at the reference throughput of the 8B stages on one H200 (5,550
# and 4,775 tokens/s, the README's figures).

# %%
from mmed_helpers.core.config import load_profile
from mmed_helpers.steps.ablations import (compute_rows, continual_pretraining_comparison, measured_throughput,
                                          paper_scale_stages)

this_run = continual_pretraining_comparison([measured_throughput(step.run, s, cfg) for s in ("stage1", "stage2")])
paper_scale = continual_pretraining_comparison(paper_scale_stages(load_profile("full")))
for title, result in (("this run's model and device", this_run), ("the paper's scale (8B, one H200)", paper_scale)):
    print(f"{title}: continual pre-training reads {result['tokens_ratio']:,.0f} times the tokens of both stages "
          f"and takes {result['hours_ratio']:,.0f} times their device hours")
    display(pd.DataFrame(compute_rows(result)).set_index("training").style.set_caption(title)
            .format({"tokens": "{:,.0f}", "tokens/s": "{:,.0f}", "hours": "{:,.3g}"}, na_rep=""))

# %% [markdown]
# At the paper's scale the two stages take hours on one GPU, continual pre-training on MMedC months of one GPU
# (or weeks of a node of eight): two to three orders of magnitude. That is the paper's case for instruction
# fine-tuning; whether the accuracy follows is exactly what this notebook's comparisons (and notebook 05's against
# MMed-Llama 3's published numbers) must show, on a real model.
#
# ## 7. The record
#
# `06_ablations/results.json` holds, for every variant: what it is and trains, the data it trained on (records per
# language; the kept translations for the CCTS variants), each training's steps, trainable parameters, wall time
# and peak memory (and which recipe model it reuses), its accuracy per benchmark and language with intervals, its
# paired test against its reference (`versus_reference`, the matched one) and against the recipe itself
# (`versus_recipe`); and the Open Question 1 figures. Only facts of the artifacts: a rerun that
# reproduced them writes the same bytes.

# %%
from mmed_helpers.steps.ablations import write_results

results_path = write_results(step.run.ablation_results, cfg, ctx, outcomes, compared, versus_recipe,
                             extra={"open_question_1": {"this_run": this_run, "paper_scale": paper_scale}})
manifest = step.write_manifest(
    parameters={"ablations": vars(ab)},
    inputs={"ccts_scores": step.run.require("ccts_scores")},
    outputs={"results": str(results_path), "variants": list(outcomes), "items": len(ctx.items)},
    this_run={"trained_now": {n: o.trained_now for n, o in outcomes.items() if o.trained_now},
              "answers": {n: o.scored for n, o in outcomes.items()}},
)
print(f"wrote {results_path} and {manifest}")

# %% [markdown]
# ## Summary
#
# - The paper's next checks are four studies of variants, declared by the profile's `ablations` section and run
#   through the same `train_stage` and `evaluate_or_reuse` as notebooks 03-05; a variant whose training equals
#   the recipe's reuses the recipe's model, and a rerun trains and scores nothing again.
# - The CCTS study re-filters notebook 02's stored scores and translations: no translation is made twice.
# - Every variant answers the same items and is compared item by item with its reference (exact McNemar, per
#   benchmark and language), at matched steps; its trainable parameters, wall time and peak memory sit beside its
#   accuracy in `results.json`.
# - Open Question 1: from this run's own throughput, continual pre-training on MMedC would take orders of
#   magnitude more compute than the two stages.
#
# ## Exercises
#
# 1. How many trainable parameters does a stage-1 DoRA adapter of rank 64 add over rank 32 on this run's base
#    model? Find it in the results table, explain where it comes from, and check your number with the cell below.
#
# <details><summary>Answer</summary>
#
# **299,008.** On the `smoke` profile the rank-64 stage-1 variant trains 602,880 parameters and the rank-32 one
# 303,872 (the results table, *trainable parameters*). DoRA's low-rank part is A (r × d_in) and B (d_out × r) for
# each of the 28 adapted weights (7 projections × 4 layers), so every extra rank adds d_in + d_out per weight: per
# layer 256 (q) + 192 (k) + 192 (v) + 256 (o) + 480 (gate) + 480 (up) + 480 (down) = 2,336, times 4 layers =
# 9,344 per rank, times the 32 extra ranks = 299,008. The 4,864 magnitudes are the same at every rank. α grows
# with r (α = r/2), so the scale α/r of the update stays the paper's 0.5 and only the capacity changes. Twice the
# parameters bought nothing measurable here: at 30 steps rank 64 answered 40 of the 169 single-answer items and
# rank 32 answered 41 (exact McNemar p = 1.0); the tiny model and its 96 training answers limit it, not the rank.
# On a real model the adapter stays small next to the frozen weights, so a higher rank costs little time and
# memory; whether it buys accuracy is what the rank plot shows, with its intervals.
#
# </details>
#
# 2. Make the Open Question 1 estimate your own: call `paper_scale_stages(load_profile("full"), tokens_per_sample=1000)`
#    (longer samples) and then with `ift_share=0.8`. How do the two stages' hours and the ratio to continual
#    pre-training change, and which assumption matters most?
#
# <details><summary>Answer</summary>
#
# With the defaults (200,000 samples × 400 tokens, half in each stage, the `full` profile's 1 and 2 epochs) the
# stages take 2.0 h (40 M tokens) and 4.65 h (80 M tokens): 6.7 h for both, against 1,914 h for continual
# pre-training on MMedC at 3,700 tokens/s (5,550 / 1.5): 212 times the tokens, 288 times the hours.
#
# | assumption | stage 1 | stage 2 | both stages | tokens ratio | hours ratio |
# | --- | --- | --- | --- | --- | --- |
# | defaults | 2.0 h | 4.65 h | 6.7 h | 212 | 288 |
# | `tokens_per_sample=1000` | 5.0 h | 11.6 h | 16.6 h | 85 | 115 |
# | `ift_share=0.8` | 3.2 h | 1.9 h | 5.1 h | 266 | 378 |
#
# The tokens per sample matter most: the two stages' cost grows in proportion, and the ratio falls by the same
# factor. The split matters through stage 2's two epochs (a token of MMed-IFT-MC is trained twice). Continual
# pre-training's 1,914 hours depend on none of them, only on the corpus (25.5 billion tokens) and on the assumed
# 1.5 for full-parameter training: set `full_training_cost=1.0` in `continual_pretraining_comparison` and it is
# still 1,276 hours. Whichever way, the gap stays at two orders of magnitude: about 80 days of one H200 (10 days of
# a node of eight) against an afternoon. What the comparison cannot say is whether the accuracy follows: that
# needs the paper's models, or this notebook's comparisons on a real base.
#
# </details>
#
# 3. Read the transfer study: which languages does the English-only stage 1 lose on against stage 1 on all six
#    languages, and could 20 items per language show it?
#
# <details><summary>Answer</summary>
#
# In one `smoke` run (yours may differ by an item or two; MMedBench, log-likelihood, both at 30 steps), the
# English-only stage 1 and stage 1 on all six languages differ on two languages only: Chinese, 5 of 20 against 8 of
# 20 (2 items right only for English-only, 5 only for all languages: exact McNemar p = 0.45), and English, 5 of 20
# against 4 of 20 (p = 1.0); in French, Japanese, Russian and Spanish both get as many right (in all but Russian
# not the same items: 1 or 2 each way). So no, the data cannot show a
# loss: with 20 items a language (14 and 15 single-answer items for French and Japanese), notebook 05's exercise
# says it takes at least 6 items one way and none the other, a 30-point gap, for p < 0.05, and the tiny model
# moves far less. The 30 steps are matched, so English-only saw each of its 16 training answers (20 English records,
# 4 held out) about 7 times where all-languages saw its 96 a little over once. On a real model the question is
# answerable: with MMedBench's test set (hundreds of items per language) a loss of a few points in the languages
# stage 1 did not see becomes testable, and the per-language rows of `results.json` (`versus_reference`) hold the
# paired test for each.
#
# </details>

# %%
# Exercise 1: put the difference in place of None and run this cell (a wrong answer gets a hint, not the answer)
from mmed_helpers.exercises import check_rank_parameters

check_rank_parameters(None, step.run.base_model().path)
