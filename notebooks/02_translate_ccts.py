# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mmed-course/mmed-course/blob/main/notebooks/02_translate_ccts.ipynb)
#
# # 02 · Multilingual expansion with the cycle-consistency translation score (CCTS)
#
# Medical instruction data is scarce outside English. The paper expands its English data into five more languages
# by machine translation, and guards quality with a round trip: translate a sample **source → target → source**
# and keep the translation only if the back-translation is close to the original. Closeness is the
# **cycle-consistency translation score (CCTS)**, built from BLEU and BERTScore; the paper keeps samples above
# **0.8**. This notebook runs that cycle on the English part of notebook 01's datasets, scores every pair, and
# saves the translations that pass.
#
# **You will learn**
# - how a translation cycle is organised so that it resumes after a crash without translating anything twice;
# - what BLEU and BERTScore each measure, why the tokeniser must suit the language, and how CCTS combines them;
# - how the threshold trades quantity for quality (the sweep), and what good and bad round trips look like.
#
# | profile | translator | time for this notebook |
# | --- | --- | --- |
# | `smoke` | the embedded tiny model (pre-trained on the passages, never taught to translate), 3 English samples per dataset | under a minute on a CPU |
# | `colab` | the 1.5B instruct base model, up to 500 samples per dataset | 1-2 hours on a T4 (estimated) |
# | `full` | the 8B base model, an endpoint, or an NLLB/M2M/Marian model (`ccts.translator: seq2seq`) | many hours on one GPU |

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
overrides = {}      # e.g. {"ccts.threshold": 0.7, "ccts.meaning_guard": False, "ccts.score_form": "mean"}
dataset_license = "other"  # the licence your corpus allows (e.g. "cc-by-4.0"), for the dataset cards
hub_namespace = ""         # e.g. "my-org": push both datasets there (private; needs HF_TOKEN and a non-offline profile)

# %%
import pandas as pd
from mmed_helpers.core.notebook import start

step = start("translate", profile=profile, run_dir=run_dir or None, overrides=overrides)
cfg = step.cfg
print(f"profile {cfg.name!r}, writing to {step.out_dir}")
print(f"source language {cfg.ccts.source_language!r} -> {[l for l in cfg.languages if l != cfg.ccts.source_language]}")

# %% [markdown]
# ## 1. What gets translated
#
# The source samples are the English items of notebook 01's two datasets (`ccts.max_source_samples` per dataset,
# 0 = all). Each sample is translated field by field — question and answer; or question, every option and the
# rationale — so its structure survives, and the answer letter of an MC item stays valid.

# %%
from mmed_helpers.core.records import load_items
from mmed_helpers.steps.translate import sample_fields, select_sources

datasets = {"ift": load_items(step.run.require("ift"), "ift"), "mc": load_items(step.run.require("mc"), "mc")}
for kind, items in datasets.items():
    chosen = select_sources(items, cfg.ccts.source_language, cfg.ccts.max_source_samples)
    print(f"{kind}: {len(items)} items, {len(chosen)} {cfg.ccts.source_language!r} sources to translate")
sample_fields(select_sources(datasets["mc"], cfg.ccts.source_language, 1)[0])

# %% [markdown]
# ## 2. The translator
#
# `ccts.translator: llm` prompts a chat model (the base model, or the endpoint configured for notebook 01) with
# `mmed_helpers/data/prompts/translate.yaml`; `seq2seq` uses a dedicated MT model (NLLB-200, M2M-100 or Marian)
# with its language codes. Translation is greedy: a round trip should measure the translator, not sampling noise.

# %%
from mmed_helpers.steps.translate import make_translator

translator = make_translator(cfg, step.run.base_model().path)
translator.describe()

# %% [markdown]
# ## 3. The score
#
# The paper keeps a translation when BLEU and BERTScore between the source and its back-translation, combined,
# reach 0.8; it does not publish the combination. Taken as an equal-weight mean, that rule fails both ways on
# medical text: a faithful round trip of the kind MT returns ("reduce" → "decrease", "because of" → "due to")
# has a sentence BLEU of 0.2–0.6, so the mean stays under 0.8 and the filter throws it away; a one-word meaning
# flip ("contraindicated" → "recommended") keeps BLEU near 0.9 and passes. The course therefore **calibrates**
# the score on labelled round trips it ships (`mmed_helpers/data/ccts_calibration/`: 204 English pairs, 20 per
# other language, half faithful, half unfaithful by negation, direction, drug, dose, unit, number, laterality,
# population, a dropped clause or an addition):
#
# $$\mathrm{CCTS} = \sigma\big(a\cdot \mathrm{BLEU}/100 + b\cdot \mathrm{BERTScore}_{F1} + c\big), \qquad a, b \ge 0$$
#
# a logistic fit (closer never scores less) of faithful round trips against gross failures (another sample's
# back-translation, a truncated one), so CCTS ≥ 0.8 reads "four-to-one odds that the round trip is a faithful
# translation rather than a broken one". What neither ingredient can see, a **meaning guard** checks
# (`ccts.meaning_guard`, on by default; not in the paper): the same numbers and units, the same count of
# negation cues, no opposite swapped in (increase/decrease, left/right, adults/children ...), the same drugs and
# pathogens. Its rejects are counted as `meaning_changed`.
#
# **BLEU** counts shared n-grams: strict, surface-level, and it needs words. Chinese and Japanese have no
# spaces, so sacrebleu's `zh` and `ja-mecab` tokenisers segment them first. **BERTScore** matches contextual
# embeddings of the tokens, so paraphrases still score well. One more blind spot: a translator that leaves the
# text untranslated makes a *perfect* round trip, so the course also checks that the forward translation is in
# the target language (`ccts.check_target_language`) and counts those pairs as `wrong_target_language`. A few
# pairs show how the parts behave:

# %%
from mmed_helpers.steps.ccts import CCTSScorer, decide

scorer = CCTSScorer.from_config(cfg.ccts)
src = "Nitrates are contraindicated within 24 hours of taking sildenafil."
demo = [
    (src, src),
    (src, "Nitrates are contraindicated in the 24 hours after sildenafil is taken."),
    (src, "Nitrates are recommended within 24 hours of taking sildenafil."),
    (src, "Nitrates are contraindicated within 48 hours of taking sildenafil."),
    (src, "Heparin activates antithrombin."),
]
demo_scores = scorer.score([d[0] for d in demo], [d[1] for d in demo], "en")
pd.DataFrame([{"back-translation": b, **vars(sc), "decision": r, "why": w}
              for (s, b), sc, (r, w) in zip(demo, demo_scores, decide(demo_scores, [d[0] for d in demo],
                                                                     [d[1] for d in demo], "en", cfg.ccts))])

# %% [markdown]
# ### The calibration, measured
#
# Below, every shipped round trip scored with this profile's encoder: the fit (with `ccts.calibration: fit`,
# the one in use; with `fixed`, the profile's coefficients are in use and should match it), then per ingredient
# and combined the ROC AUC, the share of faithful round trips kept and of unfaithful ones rejected at the
# threshold, on the hand-written pairs and on the derived gross failures. Read the first table for what the
# guard adds: the score alone cannot separate a one-word flip from a paraphrase (BLEU even ranks the flip higher:
# AUC below 0.5), the guard can; the score's job is the broken translation (second table).

# %%
from mmed_helpers.plots import plot_ccts_calibration
from mmed_helpers.steps.ccts import fit_calibration

calibration = scorer.calibration or fit_calibration(scorer)
lang = cfg.ccts.source_language
print(f"encoder {scorer.model} (layer {scorer.num_layers}); fitted a, b, c = "
      f"{tuple(round(x, 4) for x in calibration.coefficients)}; in use: {tuple(round(x, 4) for x in scorer.coefficients)}")
calibration_table = pd.DataFrame(calibration.metrics(cfg.ccts.threshold, lang=lang)).set_index("score")
display(calibration_table.round(3))
display(pd.DataFrame(calibration.metrics(cfg.ccts.threshold, derived=True, lang=lang)).set_index("score").round(3))
per_language = pd.DataFrame([{"lang": l, **m} for l in sorted({p.lang for p in calibration.pairs})
                             for m in calibration.metrics(cfg.ccts.threshold, lang=l)[-1:]]).set_index("lang")
display(per_language[["faithful_kept", "unfaithful_rejected", "n_faithful", "n_unfaithful"]].round(3))
plot_ccts_calibration(calibration, cfg.ccts.threshold, lang=lang, save_to=step.out_dir / "ccts_calibration.png");

# %% [markdown]
# ## 4. Run the cycle
#
# Forward and backward translations are appended to `raw/forward.jsonl` and `raw/backward.jsonl` as each batch
# finishes, under ids like `seed-mc-en-001|ja|option_B`. Interrupt and rerun: finished translations are reused, a
# line cut short is dropped and redone. Scores are cheap and are recomputed every run, so changing the threshold
# or the weights never retranslates anything.
#
# A translation that reproduces one of notebook 05's evaluation items, in the target language or through its
# back-translation in the source language, is rejected as `benchmark_overlap` (the 13-gram check of notebook
# 01), even when its round trip is perfect.

# %%
from mmed_helpers.steps.benchmarks import decontamination_index
from mmed_helpers.steps.translate import run_expansion

# translations that reproduce an evaluation item (in the target language, or through the back-translation in the
# source language) are rejected as benchmark_overlap, as in notebook 01
result = run_expansion(cfg, step.run, translator, scorer, datasets, benchmarks=decontamination_index(cfg))
rows = pd.DataFrame(result.rows())
print(f"translated now: {result.translated_now} texts; recovered partial lines: {result.recovered_lines}")
summary = rows.groupby(["kind", "target_lang"]).agg(
    pairs=("id", "size"), kept=("kept", "sum"), failed=("reason", lambda r: (r == "translation_failed").sum()),
    wrong_language=("reason", lambda r: (r == "wrong_target_language").sum()),
    meaning_changed=("reason", lambda r: (r == "meaning_changed").sum()),
    benchmark_overlap=("reason", lambda r: (r == "benchmark_overlap").sum()),
    below_threshold=("reason", lambda r: (r == "below_threshold").sum()),
    mean_ccts=("ccts", "mean"), mean_bleu=("bleu", "mean"), mean_bertscore=("bertscore", "mean"))
summary

# %% [markdown]
# On the `smoke` profile the translator is the tiny model of notebook 00, which was never taught to translate: its
# "translations" are noise,
# the round trip shares almost nothing with the source, BLEU is about 0, BERTScore is low, and CCTS lands far
# below 0.8 — so the filter rejects everything (the language check gets there first: noise is in no language,
# but the meaning guard and CCTS alone would reject it too). That is the lesson: the filter catches garbage. The
# hand-written seed items in all six languages (notebook 01) carry the later notebooks. With a real model most
# pairs land near the threshold and both the calibration and the guard matter.

# %% [markdown]
# ## 5. Where the scores fall, and what the threshold costs

# %%
from mmed_helpers.plots import plot_ccts_histograms, plot_threshold_sweep

plot_ccts_histograms(result.rows(), cfg.ccts.threshold, save_to=step.out_dir / "ccts_histograms.png")
plot_threshold_sweep(result.rows(), cfg.ccts.threshold, save_to=step.out_dir / "threshold_sweep.png");

# %% [markdown]
# The worst and the best round trips, side by side: reading them is the quickest way to decide whether the
# threshold is right for your translator.

# %%
scored = rows.dropna(subset=["ccts"]).sort_values("ccts")
cols = ["target_lang", "ccts", "bleu", "bertscore", "source_text", "translation", "back_translation"]
with pd.option_context("display.max_colwidth", 120):
    display(pd.concat([scored.head(3).assign(end="worst"), scored.tail(3).assign(end="best")])[["end", *cols]])

# %% [markdown]
# ## 6. The kept translations
#
# Kept samples are saved as `mmed_ift_translated` and `mmed_ift_mc_translated` (chat form, with their scores), next
# to `scores.jsonl` holding every pair. Stage 1 trains on MMed-IFT plus these.

# %%
kept_counts = {kind: len(items) for kind, items in result.kept.items()}
print("kept:", kept_counts)
first_kept = next((it for items in result.kept.values() for it in items), None)
if first_kept is not None:
    for m in first_kept.to_messages():
        print(f"[{m['role']}]\n{m['content']}\n")
else:
    print("no translation passed the threshold on this run")

# %%
manifest = step.write_manifest(
    parameters={"ccts": vars(cfg.ccts)},
    inputs={p.name: p for p in (step.run.ift, step.run.mc)},
    outputs={
        "translator": translator.describe(),
        "scorer": scorer.describe(),
        "threshold": cfg.ccts.threshold,
        "reasons": {k: int(v) for k, v in rows["reason"].value_counts().items()},
        "calibration": {"coefficients": list(calibration.coefficients), "encoder": scorer.model,
                        "metrics": calibration.metrics(cfg.ccts.threshold, lang=lang)},
        "pairs": len(result.pairs),
        "kept": kept_counts,
        "contamination": result.contamination.to_dict() if result.contamination else None,
        "kept_ids": sorted(r["id"] for r in result.rows() if r["kept"]),
        "by_language": {f"{k}/{l}": int(v) for (k, l), v in summary["kept"].items()},
        "datasets": {p.name: str(p) for p in (step.run.ift_translated, step.run.mc_translated)},
    },
    this_run={"translated_now": result.translated_now, "recovered_lines": result.recovered_lines},
)
print(f"wrote {manifest}")

# %% [markdown]
# ## 7. Dataset cards, ready to publish
#
# Each dataset (with its kept translations) is written as the Hub serves a dataset: a `README.md` **dataset card**
# (licence, languages, rows per language and origin, the reject table, decontamination, CCTS statistics, the
# generator, the translator and every setting) and `data/train-00000-of-00001.parquet`. `datasets.load_dataset`
# reads the folder as it would read the Hub. Set `dataset_license` to what your corpus allows; with
# `hub_namespace` set (and `HF_TOKEN` in the environment, on a profile that is not offline) both are pushed as
# private datasets.

# %%
from IPython.display import Markdown

from mmed_helpers.core.card import dataset_card, prepare_upload, push_to_hub

for kind in ("ift", "mc"):
    folder = prepare_upload(step.run, kind, step.run.publish_folder(kind), license=dataset_license)
    print(f"{kind}: {folder}")
    if hub_namespace:
        print("  pushed:", push_to_hub(step.run, kind, f"{hub_namespace}/{folder.name.replace('_', '-')}",
                                       license=dataset_license))
card = dataset_card(step.run, "mc", license=dataset_license)  # the README.md just written
Markdown(card.split("\n---\n", 1)[1])  # as the Hub shows it (its YAML metadata left out)

# %% [markdown]
# ## Summary
#
# - Each English sample is translated into five languages and back, field by field, resumably.
# - CCTS = a logistic of sentence BLEU (language-aware tokenisation) and BERTScore F1, calibrated on shipped
#   labelled round trips so that the paper's 0.8 is a meaningful cut; a meaning guard catches the number,
#   negation and term flips the score cannot see.
# - The histograms and the sweep show what the threshold keeps; the worst/best table shows why.
# - Kept translations are saved in chat form with their scores, and the manifest records threshold, weights and
#   the kept ids.
# - Each dataset gets a Hub dataset card and an upload folder; `push_to_hub` publishes it (token from `HF_TOKEN`).
#
# ## Exercises
#
# 1. Set `overrides = {"ccts.threshold": 0.0, "ccts.check_target_language": False, "ccts.meaning_guard": False}`
#    and rerun: nothing is retranslated, and every complete pair is kept. How many are kept on this run? Then try
#    `{"ccts.score_form": "mean"}` (the equal-weight mean) and read the calibration table: how many of the
#    faithful English round trips does the mean keep at 0.8? Check that count with the cell below.
#
# <details><summary>Answer</summary>
#
# On the `smoke` profile nothing is kept even then: all 30 round trips (3 English IFT and 3 MC sources, each into
# five languages) are `translation_failed`, because the tiny model returns an empty translation, so no pair is
# complete and none is scored (`translated now: 0`: the stored outputs were reused). With a real translator every
# complete pair would be kept, garbage included: the threshold and the checks are all that stand between the
# translator and the training data.
#
# The row `mean (before)` of the first calibration table answers the second part: with the `smoke` encoder
# (MiniLM, layer 6) the equal-weight mean keeps **11 of the 102** faithful English round trips (10.8 %), where
# BERTScore alone keeps 99 % and the calibrated CCTS 94 % (96). Faithful paraphrases have a sentence BLEU of
# 0.2-0.6, which drags the mean under 0.8, while meaning flips keep a high BLEU: the mean rejects only half of the
# unfaithful pairs, and its ROC AUC below 0.5 says it ranks them *above* the faithful ones. With
# `score_form: mean` that mean is the keep decision, so on a real run it throws away most good translations. (The
# `colab` and `full` profiles use another encoder, so their figures differ.)
#
# </details>
#
# 2. Score a Japanese sentence against itself with `sacrebleu.sentence_bleu(s, [s], tokenize="13a")` and with
#    `"ja-mecab"`, then a one-word change of it with both. What goes wrong with `13a`?
#
# <details><summary>Answer</summary>
#
# With `s = "糖尿病の患者には定期的な眼科検診が推奨される。"` (regular eye examinations are recommended for patients
# with diabetes) and the change 糖尿病 → 高血圧 (diabetes → hypertension):
#
# | pair | `13a` | `ja-mecab` |
# | --- | --- | --- |
# | the sentence against itself | 100 | 100 |
# | one word changed | 0.0 | 86.6 |
#
# `13a` splits text at spaces and Latin punctuation; Japanese has no spaces, so the whole sentence is one "word"
# and BLEU becomes an exact-match test: 100 or 0, nothing between, for any change at all. `ja-mecab` segments it
# into 16 words (糖尿 病 の 患者 に は ...), so one changed word costs what it should. This is why the course picks
# the tokeniser by language (`bleu_tokenizer("ja") == "ja-mecab"`, `"zh"` for Chinese). Notice too that the
# changed sentence still scores 87 with `ja-mecab` although it now recommends eye checks for another disease:
# BLEU cannot tell which word changed, which is why CCTS is not the only check.
#
# </details>
#
# 3. On a GPU, switch to a dedicated MT model: `{"ccts.translator": "seq2seq", "ccts.translator_model":
#    "facebook/nllb-200-distilled-600M"}`. Compare the kept fraction per language with the LLM translator.
#
# <details><summary>Answer</summary>
#
# Not measured by the course (it needs the model download and a GPU). Run it in a copy of the run folder, or after
# deleting `02_translate_ccts/raw/`: stored translations belong to the translator that made them and a run
# refuses to mix in another's. Compare `kept / pairs` per `target_lang` in the summary table (or `by_language` in
# the manifest) of both runs. What to expect: a dedicated MT model translates literally and never answers the
# question instead of translating it, adds an explanation or drops the format, so its back-translations stay
# closer to the source: higher BLEU and usually a higher kept fraction, most of all for French, Spanish and
# Russian; Chinese and Japanese keep less (segmentation and word order cost BLEU there). Its weak spots are
# medical terms, abbreviations and long rationales (it was trained on sentences), which the meaning guard and the
# `wrong_target_language` check catch in part. Mind the licence: NLLB-200's weights are CC-BY-NC-4.0, so set
# `dataset_license` for translations made with it accordingly.
#
# </details>

# %%
# Exercise 1: put your count (or share) in place of None and run this cell (a wrong answer gets a hint)
from mmed_helpers.exercises import check_mean_score_kept

check_mean_score_kept(None, calibration=calibration, threshold=cfg.ccts.threshold)
