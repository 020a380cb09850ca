# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mmed-course/mmed-course/blob/main/notebooks/05_evaluate.ipynb)
#
# # 05 · Evaluation: MedQA, MedMCQA, PubMedQA and MMedBench, per language
#
# Did the two stages help, and where? This notebook scores four models — the **base**, **stage 1** (DoRA on
# MMed-IFT, merged), **stage 2** (+ QLoRA on MMed-IFT-MC) and the **single-stage ablation** (stage 2's recipe
# applied straight to the base) — on the paper's benchmarks: MedQA (USMLE), MedMCQA, PubMedQA and the
# six-language MMedBench, per language, with confidence intervals.
#
# **You will learn**
# - what each benchmark measures and how their formats become one multiple-choice item type;
# - the two scoring protocols — log-likelihood over the choices (as lm-evaluation-harness) and generation with
#   answer extraction — and why they can disagree;
# - why small evaluation sets need confidence intervals, and paired tests, before any conclusion;
# - how to read answers out of real replies, and how often that fails.
#
# | profile | items | time for this notebook |
# | --- | --- | --- |
# | `smoke` | the course's bundled mini sets (20 per benchmark and language), tiny models | about a minute on a CPU |
# | `colab` | the public test sets, up to 500 items each | 1-2 hours on a T4 (estimated) |
# | `full` | the public test sets in full | several hours on one GPU |

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
overrides = {}      # e.g. {"evaluation.protocols": ["loglik"], "evaluation.models": ["base", "stage2"]}

# %%
import pandas as pd
from mmed_helpers.core.notebook import start

step = start("evaluate", profile=profile, run_dir=run_dir or None, overrides=overrides)
cfg, ev = step.cfg, step.cfg.evaluation
print(f"profile {cfg.name!r}, writing to {step.out_dir}")

# %% [markdown]
# ## 1. The benchmarks
#
# - **MedQA (USMLE)** — US licensing-exam vignettes, 4 options: clinical reasoning in English.
# - **MedMCQA** — Indian medical entrance-exam questions (AIIMS/NEET PG), 4 options, many short knowledge items;
#   its validation split serves as the test set (the test split has no answers).
# - **PubMedQA** — a research question and a study abstract; answer yes / no / maybe. Scored on its **test fold**:
#   the 500 labelled PMIDs the PubMedQA authors hold out (`evaluation.pubmedqa_fold: all` takes all 1,000).
# - **MMedBench** — the multilingual benchmark of the MMedLM authors: exam questions in English, Chinese,
#   Japanese, French, Russian and Spanish; Japanese and French items may have several correct answers. On the Hub
#   it is one `MMedBench.zip` (`MMedBench/Test/<Language>.jsonl`, `.../Train/...`); the loader downloads it once
#   into the Hugging Face cache and reads the `Test` folder (`evaluation.mmedbench_split: train` for the other).
#
# Each loader reads its benchmark's format as it is distributed — from the Hub, a local zip, an unzipped folder
# or a file, with the field variants in circulation — and reports every record it cannot use, with its line. A
# benchmark or language that yields no item at all stops here with an error naming what was looked for. With
# `evaluation.max_items_per_benchmark`, items are drawn with the profile's seed (not the first N), the same for
# every model. The `smoke` profile uses the course's own mini sets, written in each format.
#

# %%
from mmed_helpers.steps.benchmarks import load_benchmark, select_items

items, skipped = [], []
for bench in ev.benchmarks:
    loaded = load_benchmark(bench, getattr(ev, f"{bench}_source"), languages=cfg.languages, offline=cfg.offline,
                            split=ev.mmedbench_split, fold=ev.pubmedqa_fold)
    skipped += [(bench, where, why) for where, why in loaded.skipped]
    items += select_items(loaded.items, ev.max_items_per_benchmark, cfg.seed)
print(f"{len(items)} items; {len(skipped)} records skipped")
counts = pd.DataFrame([(it.benchmark, it.lang, it.multi) for it in items], columns=["benchmark", "lang", "multi-answer"])
display(counts.groupby(["benchmark", "lang"]).agg(items=("multi-answer", "size"), multi_answer=("multi-answer", "sum")))
if skipped:
    display(pd.DataFrame(skipped, columns=["benchmark", "where", "why"]))


# %% [markdown]
# ## 2. Two ways to score
#
# **Log-likelihood** (lm-evaluation-harness): the prompt is the harness's own for the benchmark — `medqa_4options`
# (`Question: …` then `A. …` to `D. …` then `Answer:`), `medmcqa` (the same with a `Choices:` line) and `pubmedqa`
# (`Abstract: …` with the sections on their own lines, `Question: …`, `Answer:`). For each choice the model's
# log-probability of the continuation `" A"`, `" B"`, … (PubMedQA: the words `" yes"`, `" no"`, `" maybe"`) is
# computed, and the most likely choice is the prediction. The course's tests run the harness's built-in task
# definitions on local copies of the data and require the same prompts, the same scores (to 1e-4) and the same
# accuracy. `acc_norm` divides by the choice's length in characters (the same as `acc` for single letters).
# Multi-answer items have no single most-likely letter and are scored by generation only.
#
# **Generation**: the item is asked in the chat format stage 2 trained on, in its own language; the answer letters
# are read from the reply — a leading `B.`, or a labelled answer anywhere ("The answer is C", `Answer: **B**`,
# `答案是C`, `正解はBです`, "La bonne réponse est C", MMedLM's `OPTION A IS CORRECT`, lists like `A et C`) — and an
# item counts only if the extracted set equals the gold set. A reply with no readable answer is an **extraction
# failure**: it counts as wrong, and its rate is reported per model and benchmark, since a model that "knows" the
# answer but never states it in a readable way looks worse than it is.
#

# %%
from mmed_helpers.core.mcformat import extract_answers

replies = ["Answer: B. Right coronary artery", "The correct answer is (D) Methimazole.", "答案是C", "正解はAとCです。",
           "La bonne réponse est C.", "OPTION A IS CORRECT.", "A deficiency of vitamin B12 ...", "I am not sure."]
pd.DataFrame([(r, extract_answers(r, 5)) for r in replies], columns=["reply", "extracted"])


# %% [markdown]
# ## 3. The models
#
# Stage 2's adapter was trained on the merged stage-1 model in 4-bit; here it is evaluated on the 16-bit merged
# model (the usual way to serve a QLoRA adapter). The single-stage ablation — stage 2's recipe on the base,
# skipping stage 1 — is trained here if the run has none yet (`evaluation.train_single_stage`).

# %%
from mmed_helpers.steps.evaluate import model_sources

if "single_stage" in ev.models and ev.train_single_stage and not step.run.has("single_stage_adapter"):
    from mmed_helpers.steps.train import train_stage

    ablation = train_stage("single_stage", cfg.stage2, step.run.base_model().path, step.run.training_data("single_stage"),
                           step.run.single_stage_train, cfg.model, seed=cfg.seed, profile=cfg.name)
    print(f"single-stage ablation trained: {ablation.global_step} steps, final loss {ablation.final_loss:.3f}")
sources = model_sources(step.run, ev.models)
pd.DataFrame([(n, str(m), str(a) if a else "") for n, (m, a) in sources.items()], columns=["model", "weights", "adapter"])

# %% [markdown]
# ## 4. Evaluate
#
# Each model's scored answers are saved with what they depend on (the weights and adapter, every item, the protocols
# and generation settings). Rerunning this notebook reads them back instead of scoring again; change any of those
# and that model is scored anew.

# %%
from mmed_helpers.steps.evaluate import evaluate_or_reuse

results = []
for name, (model_dir, adapter) in sources.items():
    scored, reused = evaluate_or_reuse(name, model_dir, adapter, items, ev.protocols, step.run.eval_model_results(name),
                                       dtype=cfg.model.dtype, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens)
    print(f"== {name}: {len(scored)} answers" + (" (kept from an earlier run: same model, items and settings)" if reused else ""))
    results += scored
print(f"{len(results)} scored answers")

# %% [markdown]
# ## 5. Results
#
# Accuracy per benchmark, language and protocol, with 95 % Wilson intervals. On 20 items an interval spans
# about ±20 points: differences smaller than that are not evidence. The plots use the log-likelihood protocol
# when it ran (every model gets a clean answer to every single-answer item); the table has both.

# %%
from mmed_helpers.steps.evaluate import summarize, summarize_overall

rows = summarize(results)
overall = summarize_overall(results)
table = pd.DataFrame(overall)
table["result"] = table.apply(lambda r: f"{100 * r.accuracy:.1f} [{100 * r.ci_low:.0f}-{100 * r.ci_high:.0f}] (n={r.n})", axis=1)
display(table.pivot_table(index=["benchmark", "protocol"], columns="model", values="result", aggfunc="first")[list(sources)])
failures = table[table.protocol == "generate"]
if len(failures):  # replies no answer could be read from (they count as wrong)
    display(failures.pivot_table(index="benchmark", columns="model", values="unparsed_rate", aggfunc="first")
            [[m for m in sources if m in set(failures.model)]].style.format("{:.0%}").set_caption("extraction failures"))

# %%
from mmed_helpers.plots import plot_accuracy

main_protocol = "loglik" if "loglik" in ev.protocols else "generate"
order = list(sources)
mmed = [r for r in rows if r["benchmark"] == "mmedbench" and r["protocol"] == main_protocol]
if mmed:
    plot_accuracy(mmed, "lang", f"MMedBench by language ({main_protocol})", save_to=step.out_dir / "mmedbench_by_language.png",
                  models=order)
compare = [r for r in overall if r["protocol"] == main_protocol and r["model"] in ("base", "stage2", "single_stage")]
plot_accuracy(compare, "benchmark", f"Two-stage vs single-stage ({main_protocol})", save_to=step.out_dir / "two_vs_single.png",
              models=order);

# %% [markdown]
# Where do the protocols disagree? For each model, the share of single-answer items where log-likelihood and
# generation pick different letters (an empty reply counts as a disagreement).

# %%
if {"loglik", "generate"} <= set(ev.protocols):
    by_key = {}
    for r in results:
        by_key.setdefault((r.model, r.benchmark, r.item_id), {})[r.protocol] = r
    disagree = {}
    for (model, _, _), protos in by_key.items():
        if "loglik" in protos and "generate" in protos:
            d = disagree.setdefault(model, [0, 0])
            d[0] += protos["loglik"].pred != protos["generate"].pred
            d[1] += 1
    display(pd.DataFrame([(m, d[0], d[1], d[0] / d[1]) for m, d in disagree.items()],
                         columns=["model", "disagreements", "items", "share"]))

# %% [markdown]
# ### What the models actually say
#
# The generation protocol's raw replies, one item per language, side by side for every model, with the letter
# read from each (`-`: none could be read). The share of readable replies per model says whether a model has
# learned to answer in the format at all — on `smoke`, that is what stage 2 teaches the tiny model, while its
# choice of letter stays close to chance.

# %%
from mmed_helpers.steps.evaluate import parse_rates, replies_side_by_side

if "generate" in ev.protocols:
    display(pd.Series(parse_rates(results), name="replies with a readable answer").map("{:.0%}".format).to_frame())
    display(pd.DataFrame(replies_side_by_side(results, items)))

# %% [markdown]
# ## 6. Is the difference real? Paired comparisons
#
# Every model answered the same items, so two models are compared item by item: only the items one gets right and
# the other wrong carry information. Under "no difference" those split like fair coin flips; the **exact McNemar
# test** gives the probability of a split at least as lopsided. A p-value above 0.05 means the data do not show a
# difference — on 20-item sets, that is what to expect unless the gap is large.
#

# %%
from mmed_helpers.steps.evaluate import compare_models, describe_comparison

comparisons = compare_models(results, list(sources))
pairs = pd.DataFrame(comparisons)
display(pairs[(pairs.lang == "all") & (pairs.protocol == main_protocol)].round(3))
headline = [r for r in comparisons if r["lang"] == "all" and r["protocol"] == main_protocol
            and {r["model_a"], r["model_b"]} in ({"stage2", "single_stage"}, {"stage2", "stage1"})]
statements = [describe_comparison(r) for r in headline]
print("\n".join(statements) or "stage 2 was not compared with stage 1 or the single-stage model in this run")


# %% [markdown]
# **Reading the numbers.** On the `smoke` profile every model is a tiny network scored on 20-item sets: the
# accuracies are noise and **say nothing about quality** — they show that every piece of the evaluation runs.
#
# On the `full` profile, mind which protocol a published number comes from before comparing:
# - **MMedBench leaderboard (MMedLM authors)**: average accuracy **Llama 3 8B 62.79**, **MMed-Llama 3 8B 67.75**.
#   MMedLM fine-tunes every model on MMedBench's *train* split before testing and scores generated answers in its
#   own format (`OPTION X IS CORRECT`). These are numbers *after* that fine-tuning, not zero-shot: they are not
#   comparable with this notebook's base or stage rows, which never saw MMedBench's training split.
# - **lm-evaluation-harness numbers** for MedQA, MedMCQA and PubMedQA (model cards, the Open Medical-LLM
#   leaderboard) are zero-shot log-likelihood `acc` on the same prompts as the `loglik` rows here; PubMedQA on its
#   500-item test fold.
# - The paper reproduced here reports its own gains over its base per benchmark and language; expect your numbers
#   to move with the amount of generated data, the translator, and the protocol.
#

# %%
from mmed_helpers.steps.evaluate import results_to_json

results_path = results_to_json(rows + overall, results, step.run.eval_results, comparisons=comparisons)
manifest = step.write_manifest(
    parameters={"evaluation": vars(ev)},
    inputs={name: (adapter or model_dir) for name, (model_dir, adapter) in sources.items()},
    outputs={"results": str(results_path), "items": len(items), "skipped": [list(s) for s in skipped],
             "overall": overall, "comparisons": statements, "parse_rates": parse_rates(results)},
)
print(f"wrote {results_path} and {manifest}")


# %% [markdown]
# ## Summary
#
# - Four public formats become one item type; bad records are skipped and reported with their line.
# - Log-likelihood (lm-evaluation-harness protocol) and generation with answer extraction are both computed; they
#   answer different questions and can disagree.
# - Every accuracy carries a 95 % interval, every pair of models an exact McNemar p-value on the same items;
#   `results.json` holds every scored answer and comparison, and the plots compare models per language and
#   two-stage against single-stage. The statements printed in section 6 say, with their p-values, whether two
#   stages beat one stage and stage 1 alone on this run.
# - Generation reports how often no answer could be read from a reply.
#
# ## Exercises
#
# 1. Run with `overrides = {"evaluation.protocols": ["loglik"]}` and then `["generate"]`. Which models lose most
#    under generation, and what do their raw replies (`results.json`) look like?
#
# <details><summary>Answer</summary>
#
# On the `smoke` profile (one run of the course; yours may differ by a few items), all items pooled:
#
# | model | `loglik` | `generate` | replies with a readable answer |
# | --- | --- | --- | --- |
# | base | 23.7 % (40/169) | 0 % (0/180) | 0 % |
# | stage1 | 24.3 % | 0 % | 0 % |
# | stage2 | 23.7 % | 19.4 % (35/180) | 89 % |
# | single_stage | 23.1 % | 16.7 % | 83 % |
#
# The base and stage 1 lose everything: no reply has a letter to read, so every item counts as wrong. The base
# continues the prompt like a passage (`"Pant"`), stage 1 writes the style of its free-text answers (`"La and la
# la la ..."`); neither was taught to answer a multiple-choice question. Stage 2 and the single-stage ablation
# reply in the trained format (`"Réponse: C."`, French prefix and all), but mostly with the same letter
# whatever the question, so their accuracy stays near chance. Log-likelihood needs no format, which is why all
# four sit near chance there (the generation rows also include the 11 multi-answer items, which log-likelihood
# cannot score). On a real model the gap is smaller, but a model that knows the answer without stating it
# readably still scores worse under generation: read the extraction-failure table before the accuracy.
#
# </details>
#
# 2. With 20 items per set, how many more items would stage 2 have to get right (and the base wrong) for the
#    exact McNemar test to reach p < 0.05? Try `mcnemar_exact(k, 0)` for growing `k`, and check your answer with
#    the cell below.
#
# <details><summary>Answer</summary>
#
# **6.** With no item the other way round, the two-sided exact p-value is 2 × 0.5ᵏ: 0.0625 at k = 5, 0.031 at
# k = 6. Six items all in one direction are 30 points on a 20-item set, so on sets this small only large effects
# can show; with one item the other way round it takes 8 (`mcnemar_exact(8, 1)` = 0.039). On the 1,273-item MedQA
# test set the same 30 points would be hundreds of items, and differences of a few points become testable.
#
# </details>
#
# 3. Point `evaluation.medqa_source` at a local copy of the full MedQA test file and compare the base model's
#    accuracy under `loglik` (the harness's plain prompt) and `generate` (its chat template).
#
# <details><summary>Answer</summary>
#
# Not measured by the course (it needs the data and a real model). With the file (for example the 1,273-item test
# split of `GBaker/MedQA-USMLE-4-options` as JSONL), set `{"evaluation.medqa_source": "/data/medqa/test.jsonl",
# "evaluation.benchmarks": ["medqa"], "evaluation.models": ["base"]}` on the `colab` or `full` profile. The
# `loglik` row is the number lm-evaluation-harness and the leaderboards report (zero-shot, no chat template, the
# most likely of " A" to " D"); the `generate` row asks the same item through the model's chat template and reads
# the letter from the reply. For an instruct base (both profiles use one) expect the two to differ by a few points
# either way, and the extraction-failure rate to say how much of a gap is format rather than knowledge; a model
# never tuned for chat loses far more under generation, as the tiny base shows in exercise 1. On 1,273 items a
# 95 % interval is about ±2.7 points; the exact McNemar test of section 6, on the items one protocol gets right
# and the other wrong, says whether the two really differ.
#
# </details>

# %%
# Exercise 2: put your number in place of None and run this cell (a wrong answer gets a hint, not the answer)
from mmed_helpers.exercises import check_mcnemar_items

check_mcnemar_items(None)
