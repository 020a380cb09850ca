"""The course's steps, one module per notebook (they import only from ``mmed_helpers.core``).

| notebook | module(s) | what it does |
| --- | --- | --- |
| ``00_setup`` | ``setup`` | the machine report; build or locate the base model and record it in the run |
| ``01_generate_qa`` | ``generate`` | condense -> generate MMed-IFT / MMed-IFT-MC, parse, filter, dedup |
| ``02_translate_ccts`` | ``translate``, ``ccts`` | translate -> back-translate -> CCTS filter |
| ``03_stage1_dora``, ``04_stage2_qlora`` | ``train`` | one SFT API for both stages (and 05's ablation), merge |
| ``05_evaluate`` | ``benchmarks``, ``evaluate`` | benchmarks as distributed; two protocols, summaries, paired tests |
| ``06_ablations`` | ``ablations`` | the paper's ablations as a grid of variants, run through 03-05's API |

``ablations`` is the one step that composes others: its variants are trained with ``train``, scored with
``evaluate``, and its CCTS study re-filters step 02's stored scores with ``translate``. Nothing imports it.
"""
