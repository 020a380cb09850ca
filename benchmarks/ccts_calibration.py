"""How well CCTS separates faithful from unfaithful round trips, on the labelled pairs shipped with the course.

    python benchmarks/ccts_calibration.py [--model packaged-minilm --layers 6] [--threshold 0.8] [--lang en]

Scores every pair in ``mmed_helpers/data/ccts_calibration`` (plus the derived gross failures) with the encoder,
fits the calibrated CCTS on them and prints, per ingredient and combined: ROC AUC, the faithful keep rate and the
unfaithful reject rate at the threshold; then the keep decision per language, and the same on the held-out
pairs (``heldout/``, written blind to the guard lexicon, never fitted on). Use ``--model`` with the
colab/full encoder (``bert-base-multilingual-cased``, layer 9) on a machine that has it.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _table(rows: list[dict]) -> str:
    lines = [f"  {'score':30s} {'ROC AUC':>8s} {'faithful kept':>14s} {'unfaithful rejected':>20s}"]
    for r in rows:
        auc = "" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        lines.append(
            f"  {r['score']:30s} {auc:>8s} {r['faithful_kept']:>14.3f} {r['unfaithful_rejected']:>20.3f}"
            f"   (n = {r['n_faithful']} / {r['n_unfaithful']})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="packaged-minilm")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--lang", default="en", help="language of the main tables ('all' = pooled)")
    args = parser.parse_args()

    from mmed_helpers.steps.ccts import CCTSScorer, fit_calibration, heldout_check

    cal = fit_calibration(CCTSScorer(args.model, args.layers, batch_size=64))
    lang = None if args.lang == "all" else args.lang
    a, b, c = cal.coefficients
    print(f"encoder {cal.meta['encoder']} (layer {args.layers}); fitted on {cal.meta['fitted_on']} round trips")
    print(f"CCTS = sigmoid({a:.4f} * BLEU + {b:.4f} * BERTScore_F1 + {c:.4f}); threshold {args.threshold}")
    print(f"\nhand-written pairs ({args.lang}): faithful vs unfaithful")
    print(_table(cal.metrics(args.threshold, lang=lang)))
    print(f"\nderived gross failures ({args.lang}): faithful vs unrelated / truncated")
    print(_table(cal.metrics(args.threshold, derived=True, lang=lang)))
    print("\nkeep decision (CCTS + guard) per language, hand-written pairs")
    for code in sorted({p.lang for p in cal.pairs}):
        print(_table(cal.metrics(args.threshold, lang=code)[-1:]).splitlines()[1].replace("CCTS + guard", code))
    written = [p for p, g, k in zip(cal.pairs, cal.guard, cal.ccts(), strict=True) if not p.faithful and not p.derived]
    kept = [
        p
        for p, g, k in zip(cal.pairs, cal.guard, cal.ccts(), strict=True)
        if not p.faithful and not p.derived and not g and k >= args.threshold
    ]
    print(f"\nunfaithful pairs kept by the whole decision: {len(kept)} of {len(written)} written ones")
    for p in kept:
        print(f"  {p.id} [{p.defect}] {p.back_translation}")

    held = heldout_check(cal)
    print("\nheld-out pairs (written blind to the guard lexicon and never fitted on): the keep decision")
    print(_table([r for r in held.metrics(args.threshold) if r["score"] != "mean (before) + guard"]))
    for code in sorted({p.lang for p in held.pairs}):
        print(_table(held.metrics(args.threshold, lang=code)[-1:]).splitlines()[1].replace("CCTS + guard", code))
    print("  held-out pairs the decision gets wrong:")
    for r in held.rows():
        keep = not r["guard"] and r["ccts"] >= args.threshold
        if keep != r["faithful"]:
            why = r["guard"] or f"ccts {r['ccts']:.2f}"
            print(f"    {r['id']} [{r['defect']}] {'kept' if keep else 'dropped'} ({why})")


if __name__ == "__main__":
    main()
