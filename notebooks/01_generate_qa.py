# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mmed-course/mmed-course/blob/main/notebooks/01_generate_qa.ipynb)
#
# # 01 · Generate medical instruction data from unstructured text
#
# The paper's first contribution is a recipe for turning unstructured medical text into instruction data in **two
# steps**: first *condense* a passage into its key facts, then *generate* questions and answers from the
# condensed text. Stage 1 trains on the general set **MMed-IFT** (free-form question + answer); stage 2 on
# **MMed-IFT-MC**, exam-style multiple-choice items with a rationale. This notebook runs that generator on the
# course's bundled passages, filters what comes out, and saves both datasets in chat form, ready for SFT.
#
# **You will learn**
# - how the condense → generate prompts are built (one file per step and language, with a worked example);
# - why every generated item needs parsing and filtering, and which filters matter (format, length, option
#   sanity, language, support by the source, exact and near duplicates);
# - how a long generation run survives a crash (append-only JSONL with stable ids, resume without duplicates).
#
# | profile | generator | time for this notebook |
# | --- | --- | --- |
# | `smoke` | the embedded tiny model (pre-trained here on the bundled passages) | under a minute on a CPU |
# | `colab` | the 1.5B instruct base model, or an endpoint | 10-30 minutes on a T4 (estimated) |
# | `full` | the 8B base model, or a stronger model behind an endpoint (vLLM, Ollama, TGI) | several hours on one GPU |

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
overrides = {}      # e.g. {"datagen.backend": "openai", "datagen.endpoint_url": "http://localhost:8000/v1"}

# %%
import pandas as pd
from mmed_helpers.core.notebook import start

step = start("generate", profile=profile, run_dir=run_dir or None, overrides=overrides)
cfg = step.cfg
print(f"profile {cfg.name!r}, writing to {step.out_dir}")

# %% [markdown]
# ## 1. The source text
#
# The course ships medical passages written for it: 30 in English across many specialties and six in each of
# Chinese, Japanese, French, Russian and Spanish. In your own project this is where your corpus goes (textbooks
# you may use, guidelines, abstracts, clinical notes you are allowed to process), through `datagen.corpus` in the
# profile or in `overrides`:
#
# - `{"datagen.corpus.path": "/data/guidelines"}`: a folder (read recursively), a file or a glob of `.txt`, `.md`,
#   `.jsonl`, `.parquet` and `.pdf` files (rows of `.jsonl`/`.parquet` are documents; `datagen.corpus.text_column`,
#   and optionally `id_column`, `language_column`, `title_column`, name their fields);
# - `{"datagen.corpus.dataset": "<hub id or local folder>", "datagen.corpus.split": "train"}`: a Hugging Face
#   dataset, streamed.
#
# Each document is cut on paragraph boundaries into passages of at most `datagen.corpus.max_passage_tokens`
# tokens of the generator's tokenizer (so the condense prompt fits its context), each passage's language is
# detected (or read from the language column), passages in other languages, too short, or duplicating another
# are skipped, and `datagen.passages_per_language` passages per language are drawn by a seeded sample (on the
# bundled corpus: the first ones). Reading streams, so memory stays flat however large the corpus.

# %%
from mmed_helpers.core.corpus import corpus_summary
from mmed_helpers.core.ingest import corpus_kind, load_passages, token_counter

count_tokens = token_counter(cfg, step.run.base_model().path)  # the generator's tokenizer (approximate for an endpoint)
passages, ingest_report = load_passages(cfg, count_tokens)
print(f"corpus: {corpus_kind(cfg.datagen.corpus)}; {len(passages)} passages used "
      f"(datagen.passages_per_language = {cfg.datagen.passages_per_language}, 0 = all)")
if ingest_report is not None:  # your own corpus: what was read, and why passages were skipped
    display(pd.Series({"documents": ingest_report.documents, "passages cut": ingest_report.passages,
                       **{f"kept {k}": v for k, v in ingest_report.kept.items()},
                       **{f"skipped: {k}": v for k, v in ingest_report.skipped.items()}}, name="ingestion").to_frame())
pd.DataFrame(corpus_summary(passages)).T

# %%
print(passages[0].title, "\n")
print(passages[0].text[:900], "...")

# %% [markdown]
# ## 2. The prompts
#
# Each step has one prompt file per language (`mmed_helpers/data/prompts/<lang>/{condense,ift,mc}.yaml`): a system
# message, a user template with a placeholder, and one worked example shown to the model as an earlier turn
# (one-shot prompting). The generation prompts ask for a JSON object, because a strict format is what makes the
# output checkable. Here is the MC prompt as the model receives it.

# %%
from mmed_helpers.steps.generate import load_prompt

mc_prompt = load_prompt("mc", passages[0].lang)
for m in mc_prompt.messages("<the condensed text of the passage goes here>"):
    print(f"--- {m['role']}\n{m['content']}\n")

# %% [markdown]
# ## 3. Generate: condense, then write items
#
# Before it starts, `estimate_generation` says what the run will ask for (prompts, input and output tokens per
# step, expected and at most) and how long the rest should take on this backend: it generates the run's first
# batch of condense prompts and first batch of item prompts, times them, and scales each step's pending prompts
# by its batch's seconds per prompt. Those outputs go into the run's stores like any other, so the measurement
# costs nothing. At the paper's scale this is the number to read before committing a GPU for a day.
#
# `run_datagen` runs both steps for every passage with the profile's backend, then filters and saves. It appends
# every model output to `raw/<step>.jsonl` as soon as its batch finishes, under a stable id
# (`<passage>:<step>:<index>`). Interrupt the cell (or the kernel) and run it again: it continues where it
# stopped, and a line cut short by the interruption is dropped and regenerated. Outputs with a backend error are
# kept for the record and retried on the next run.

# %%
from mmed_helpers.core.llm import make_backend
from mmed_helpers.steps.generate import estimate_generation

backend = make_backend(cfg.datagen, step.run.base_model().path)
print("backend:", backend.describe())
# generates the run's first condense batch and first item batch (kept: the run goes on from them), timed
estimate = estimate_generation(cfg, step.run, backend, passages, count_tokens)
print("estimate:", estimate.summary())
pd.DataFrame(estimate.rows).set_index("step")

# %%
import time

from mmed_helpers.steps.benchmarks import decontamination_index
from mmed_helpers.steps.generate import run_datagen

benchmarks = decontamination_index(cfg)  # the evaluation items of notebook 05, for the overlap check below
started = time.perf_counter()
result = run_datagen(cfg, step.run, backend, passages=passages, benchmarks=benchmarks)
generation_s = time.perf_counter() - started
print(f"generated now: {result.generated_now} outputs in {generation_s:.0f} s (estimated: {estimate.seconds():.0f} s); "
      f"recovered partial lines: {result.recovered_lines}")

# %% [markdown]
# What did the generator write? The first condensed passage, and the first raw MC output:

# %%
from mmed_helpers.core.jobs import JsonlStore

condensed = JsonlStore(step.run.generation_store("condense")).records
raw_mc = JsonlStore(step.run.generation_store("mc")).records
first = next(iter(condensed.values()))
print("CONDENSED", first["id"], "\n", first["output"][:600], "\n")
first_mc = next(iter(raw_mc.values()), None)
print("RAW MC", first_mc["id"], "\n", first_mc["output"][:600] if first_mc else "(none)")

# %% [markdown]
# On the `smoke` profile the generator is the tiny model of notebook 00, pre-trained on a few tens of thousands
# of tokens of the bundled passages and never taught to follow an instruction: what it writes is passage-like
# noise, so nearly every output fails parsing and is rejected. That is the filters doing their job. The hand-written seed items
# (20 free-form and 20 multiple-choice per language, written for this course) keep the later notebooks supplied.
# With a real instruct model most outputs parse, and the interesting rejects are language, support and
# duplicates.

# %% [markdown]
# ## 4. Filters: what was kept, what was dropped and why
#
# Every output is either kept or counted under exactly one reason, checked in this order: backend error, no
# condensed text, unparseable (no JSON object with the right fields), empty field, too short / too long (Chinese
# and Japanese characters count twice), MC option count (4-5), duplicate options, answer not one of the option
# letters, wrong language (`py3langid`, offline), **unsupported by the source** (less than
# `datagen.support_threshold` of the answer's content words occur in the source passage, a cheap proxy, not a
# fact check), **benchmark overlap** (below), then exact and near duplicates (MinHash over character 5-grams; seeds go first and win). A short
# answer is checked on its numbers, words with digits (`B12`) and abbreviations (`DKA`) as written, and one with
# nothing to check fails.
#
# Kept generated MC items then have their options reordered with the run's seed so that the correct letters come
# out balanced (a generator puts the right answer first more often than not, and a model trained on that learns
# "the answer is usually A"); the rationale's letter references ("option B", "(C)", "选项D") move with their
# options, and an item whose rationale has a letter that could be a word stays as written
# (`answer_balance` in the report).

# %%
from mmed_helpers.plots import plot_rejects

rows = [row for kind in ("ift", "mc") for row in result.reports[kind].rows()]
reject_table = pd.DataFrame(rows)
plot_rejects(rows, save_to=step.out_dir / "rejects.png")
reject_table[reject_table.total > 0]

# %%
pd.Series(result.reports["mc"].answer_balance, name="generated MC items").to_frame()

# %% [markdown]
# ### Test-set decontamination
#
# A model evaluated on questions it was trained on scores what it memorised. Every kept item (seeds too) is
# checked against every item of the four benchmarks notebook 05 evaluates on, in every language of the run, the
# way lm-evaluation-harness checks its training data: text normalised (Unicode NFKC, case-folded, punctuation
# dropped), cut into word **13-grams** (`datagen.decontamination_ngram`; a Chinese or Japanese character counts
# half a word), and an item that shares one 13-gram with a benchmark question, option or abstract is removed as
# `benchmark_overlap`. A benchmark question shorter than 13 words is looked for whole. Notebook 02 runs the same
# check on each translation and its back-translation.
#
# The same index run the other way says how much of each benchmark the corpus itself contains: a passage that
# quotes an exam question would let generated items carry it even when they paraphrase it.

# %%
from mmed_helpers.core.decontam import corpus_overlap

if benchmarks is None:
    print("decontamination is off (datagen.decontamination_ngram = 0)")
else:
    contamination = pd.DataFrame({k: result.reports[k].contamination.to_dict()["removed"] for k in ("ift", "mc")},
                                 index=list(benchmarks.items)).fillna(0).astype(int)
    contamination.insert(0, "benchmark items", pd.Series(benchmarks.items))
    display(contamination.rename(columns={"ift": "IFT items removed", "mc": "MC items removed"}))
    corpus_check = corpus_overlap((p.text for p in passages), benchmarks)
    display(pd.DataFrame(corpus_check).T.astype({"items": int, "in_corpus": int}).rename(columns={"in_corpus": "items found in the corpus"}))

# %%
examples = {f"{k}: {reason}": ex for k in ("ift", "mc") for reason, ex in result.reports[k].examples.items()}
pd.DataFrame(examples).T

# %% [markdown]
# ## 5. The datasets
#
# Both sets are saved as Hugging Face datasets in the run directory, in chat form (`messages`: the user turn and the
# assistant turn) plus the structured fields. Stage 1 trains on `mmed_ift`, stage 2 on `mmed_ift_mc`; notebook 02
# translates both into the other languages first.

# %%
from mmed_helpers.plots import plot_composition

plot_composition(result.items, cfg.languages, save_to=step.out_dir / "composition.png")
pd.DataFrame([{"kind": k, "lang": it.lang, "origin": it.origin} for k, items in result.items.items() for it in items]
             ).value_counts().unstack(fill_value=0)

# %%
ift = result.items["ift"][0]
mc = next(it for it in result.items["mc"] if it.lang == cfg.languages[-1])
for item in (ift, mc):
    print(f"=== {item.kind} {item.id} ({item.lang}, {item.origin})")
    for m in item.to_messages():
        print(f"[{m['role']}]\n{m['content']}\n")

# %%
from dataclasses import asdict

from mmed_helpers.core.corpus import corpus_path
from mmed_helpers.steps.generate import prompt_hashes

corpus = cfg.datagen.corpus
manifest = step.write_manifest(
    parameters={"datagen": asdict(cfg.datagen)},
    inputs={f"corpus_{lang}": corpus_path(lang) for lang in cfg.languages} if corpus_kind(corpus) == "bundled" else {},
    outputs={
        "corpus": {"kind": corpus_kind(corpus), "source": corpus.path or corpus.dataset or "bundled",
                   "passages": len(passages), "ingest": ingest_report.to_dict() if ingest_report else None},
        "backend": result.backend,
        "prompts_sha256": prompt_hashes(cfg.languages),
        "datasets": {p.name: str(p) for p in (step.run.ift, step.run.mc)},
        "reports": {k: r.to_dict() for k, r in result.reports.items()},
        "corpus_benchmark_overlap": corpus_check if benchmarks is not None else None,
    },
    this_run={"generated_now": result.generated_now, "recovered_lines": result.recovered_lines,
              "estimate": estimate.to_dict(), "generation_s": generation_s},
)
print(f"wrote {manifest}")

# %% [markdown]
# ## Summary
#
# - Condense, then generate: two prompts per item kind, one worked example each, JSON output.
# - Filtering is not optional: every output is parsed, checked and deduplicated, and the reject table says why
#   each one was dropped.
# - Outputs are appended under stable ids as they come, so a crash costs at most the batch in flight.
# - `mmed_ift` and `mmed_ift_mc` are saved in chat form with a manifest (prompts' hashes, backend, counts).
#
# ## Exercises
#
# 1. Raise `datagen.support_threshold` to 0.9 (in `overrides`) and rerun: nothing is generated again (the raw
#    outputs are reused), only the filters change. Which reasons grow?
#
# <details><summary>Answer</summary>
#
# On the `smoke` profile: none. The reject table is the same (all 12 generated IFT and 12 generated MC outputs are
# `unparseable`; the 120 IFT and 128 MC seeds are kept) and the saved datasets are byte for byte the same. The tiny
# model's outputs never parse, so no generated item reaches the support check, which comes after parsing, lengths,
# the MC format and the language; and the seeds are hand-written, never checked for support. With a real generator
# (`colab`, `full`) `unsupported_by_source` grows, and it is the only reason that can: every output is counted
# under its first failing reason, so the reasons checked after it (benchmark overlap, exact and near duplicates)
# can only shrink as items leave earlier. At 0.9, nine in ten content words of the answer must occur in the
# passage, so correct answers that paraphrase or add textbook background the passage does not spell out are
# dropped too: the check is a word-overlap proxy, not a fact check, and a higher threshold buys fewer unsupported
# answers with fewer items.
#
# </details>
#
# 2. Serve the tiny model as an OpenAI-compatible endpoint (`mmed-course serve runs/smoke/models/base --port 8001`
#    in a terminal) and rerun notebooks 00 and 01 in a fresh `run_dir` with `{"datagen.backend": "openai",
#    "datagen.endpoint_url": "http://127.0.0.1:8001/v1", "datagen.generator_model": "base"}`. Compare the backend
#    line in the manifest.
#
# <details><summary>Answer</summary>
#
# `outputs.backend` in `01_generate_qa/manifest.json` changes from `{"backend": "local", "model":
# ".../models/base", "device": "cpu", "batch_size": 8}` to `{"backend": "openai", "base_url":
# "http://127.0.0.1:8001/v1", "model": "base", "api_key_env": "OPENAI_API_KEY", "api_key_set": false,
# "concurrency": 8}`: where the requests went, which model name was asked for, eight requests in flight, and which
# environment variable would hold the key and whether one was set, never the key itself. The report also gains
# `structured_output: {"without_schema": 12}` per kind: the course's small server does not take a JSON schema, so
# the prompts ask for JSON in words only (vLLM, for one, accepts the schema). On `smoke` the outputs are again all
# `unparseable`: the same tiny model, reached another way. The fresh folder is needed twice over: notebook 01
# reads the base model notebook 00 recorded in the run, and a run's raw outputs belong to the backend and model
# that wrote them, so the existing run refuses to mix in another's ("restore those settings to resume, or delete
# that folder to generate again").
#
# </details>
#
# 3. Write a sixth filter: reject single-answer MC items whose correct option is more than twice as long (in
#    characters) as every distractor (a classic item-writing flaw). How many of the seed items would it catch? In
#    how many is the correct option simply the longest? Check both counts with the cell below.
#
# <details><summary>Answer</summary>
#
# ```python
# from mmed_helpers.core.mcformat import LETTERS
# from mmed_helpers.steps.generate import load_seeds
#
# def longer_than_every_distractor(item, ratio=2.0):
#     if "," in item.answer:  # several correct options: the rule is about single-answer items
#         return False
#     right = item.options[LETTERS.index(item.answer)]
#     return all(len(right) > ratio * len(o) for i, o in enumerate(item.options) if LETTERS[i] != item.answer)
#
# seeds = load_seeds("mc", cfg.languages)
# sum(longer_than_every_distractor(s) for s in seeds), sum(longer_than_every_distractor(s, 1.0) for s in seeds)
# ```
#
# It catches **none** of the 120 single-answer seeds (of 128): they were written to avoid the flaw, and the
# nearest, `seed-mc-ja-020` (良性発作性頭位めまい症, benign paroxysmal positional vertigo), is 1.83 times its
# longest distractor. The weaker cue is there, though: in **39** of the 120 the correct option is the longest,
# where about 27 would be by chance (one in four or five options), and a model can learn "pick the longest".
# In the pipeline the filter belongs in `validate` in `mmed_helpers/steps/generate.py`, returning a new reason
# (added to `REASONS`) so that the reject table counts it.
#
# </details>

# %%
# Exercise 3: put your counts in place of None and run this cell (a wrong answer gets a hint, not the answer)
from mmed_helpers.exercises import check_long_answer_seeds

display(check_long_answer_seeds(None))            # more than twice as long as every distractor
display(check_long_answer_seeds(None, ratio=1))   # simply the longest
