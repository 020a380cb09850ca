"""Matplotlib figures shown by the notebooks and the book. Each returns the ``Figure`` (and saves it if asked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _finish(fig, save_to: str | Path | None):
    fig.tight_layout()
    if save_to:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120)
    return fig


def plot_fertility(rows: Sequence[dict], save_to: str | Path | None = None):
    """Bar chart of tokens per 100 characters per language (rows from ``tokenizer_fertility``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    langs = [r["lang"] for r in rows]
    values = [r["tokens_per_100_chars"] for r in rows]
    bars = ax.bar(langs, values, color="#4C72B0")
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_ylabel("tokens per 100 characters")
    ax.set_xlabel("language")
    ax.set_title("How many tokens the tokenizer spends per language")
    ax.margins(y=0.15)
    return _finish(fig, save_to)


def plot_composition(items_by_kind: dict[str, Sequence], languages: Sequence[str], save_to: str | Path | None = None):
    """Stacked bars per language: hand-written seeds vs generated items, one panel per dataset kind."""
    import matplotlib.pyplot as plt

    titles = {"ift": "MMed-IFT (free-form Q&A)", "mc": "MMed-IFT-MC (multiple choice)"}
    fig, axes = plt.subplots(1, len(items_by_kind), figsize=(5 * len(items_by_kind), 3.2), sharey=True, squeeze=False)
    for ax, (kind, items) in zip(axes[0], items_by_kind.items(), strict=True):
        seeds = [sum(1 for it in items if it.lang == lang and it.origin == "seed") for lang in languages]
        gen = [sum(1 for it in items if it.lang == lang and it.origin != "seed") for lang in languages]
        ax.bar(languages, seeds, label="hand-written seed", color="#8C8C8C")
        ax.bar(languages, gen, bottom=seeds, label="generated", color="#4C72B0")
        ax.set_title(titles.get(kind, kind))
        ax.set_xlabel("language")
    axes[0][0].set_ylabel("items kept")
    axes[0][-1].legend(fontsize=8)
    return _finish(fig, save_to)


def plot_rejects(report_rows: Sequence[dict], save_to: str | Path | None = None):
    """Horizontal bars: how many outputs each filter kept or rejected (rows from ``FilterReport.rows``)."""
    import matplotlib.pyplot as plt

    rows = [r for r in report_rows if r["total"]]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(rows) + 1.2))
    labels = [f"{r['kind']}: {r['outcome']}" for r in rows]
    colors = ["#55A868" if r["outcome"] == "kept" else "#C44E52" for r in rows]
    bars = ax.barh(labels[::-1], [r["total"] for r in rows][::-1], color=colors[::-1])
    ax.bar_label(bars, fontsize=8)
    ax.set_xlabel("items")
    ax.set_title("Kept and rejected, by reason")
    ax.margins(x=0.15)
    return _finish(fig, save_to)


def plot_ccts_histograms(rows: Sequence[dict], threshold: float, save_to: str | Path | None = None):
    """One histogram of CCTS per target language, with the threshold marked (rows from the expansion)."""
    import matplotlib.pyplot as plt

    langs = sorted({r["target_lang"] for r in rows})
    fig, axes = plt.subplots(1, max(len(langs), 1), figsize=(2.6 * max(len(langs), 1), 2.8), sharey=True, squeeze=False)
    bins = [i / 20 for i in range(21)]
    for ax, lang in zip(axes[0], langs, strict=False):
        scores = [r["ccts"] for r in rows if r["target_lang"] == lang and r["ccts"] is not None]
        ax.hist(scores, bins=bins, color="#4C72B0")
        ax.axvline(threshold, color="#C44E52", linestyle="--", linewidth=1)
        kept = sum(s >= threshold for s in scores)
        ax.set_title(f"{lang}: {kept}/{len(scores)} kept", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("CCTS")
    axes[0][0].set_ylabel("samples")
    return _finish(fig, save_to)


def plot_threshold_sweep(rows: Sequence[dict], threshold: float, save_to: str | Path | None = None):
    """Kept fraction against the CCTS threshold, per target language and overall."""
    import matplotlib.pyplot as plt

    from .steps.ccts import kept_fraction

    thresholds = [i / 100 for i in range(101)]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for lang in sorted({r["target_lang"] for r in rows}):
        scores = [r["ccts"] or 0.0 for r in rows if r["target_lang"] == lang]
        ax.plot(thresholds, kept_fraction(scores, thresholds), label=lang, linewidth=1)
    ax.plot(
        thresholds, kept_fraction([r["ccts"] or 0.0 for r in rows], thresholds), label="all", color="black", linewidth=2
    )
    ax.axvline(threshold, color="#C44E52", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xlabel("CCTS threshold")
    ax.set_ylabel("fraction of samples kept")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("How many translations survive each threshold")
    return _finish(fig, save_to)


def plot_ccts_calibration(calibration, threshold: float, lang: str | None = None, save_to: str | Path | None = None):
    """The calibration of CCTS on the labelled round trips (a :class:`~mmed_helpers.steps.ccts.CalibrationResult`):
    the calibrated score of faithful, unfaithful (hand-written) and gross-failure (derived) round trips with the
    threshold marked, and the ROC curves of each ingredient and of CCTS, with the point the threshold picks."""
    import matplotlib.pyplot as plt

    from .steps.ccts import roc_curve

    rows = [r for r in calibration.rows() if lang is None or r["lang"] == lang]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.6))
    bins = [i / 20 for i in range(21)]
    groups = (
        ("faithful", lambda r: r["faithful"], "#55A868"),
        ("unfaithful (written)", lambda r: not r["faithful"] and not r["derived"], "#C44E52"),
        ("gross failure (derived)", lambda r: r["derived"], "#8172B2"),
    )
    for name, keep, color in groups:
        ax1.hist([r["ccts"] for r in rows if keep(r)], bins=bins, alpha=0.55, color=color, label=name)
    ax1.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax1.set_xlabel("calibrated CCTS")
    ax1.set_ylabel("round trips")
    ax1.legend(fontsize=7)
    ax1.set_title("Where the labelled round trips score")
    for ax, derived, title in (
        (ax2, False, "ROC: faithful vs written unfaithful"),
        (ax3, True, "ROC: vs gross failures"),
    ):
        sub = [r for r in rows if r["faithful"] or r["derived"] == derived]
        y = [r["faithful"] for r in sub]
        for key, label in (("bleu", "BLEU"), ("bertscore", "BERTScore F1"), ("ccts", "CCTS (calibrated)")):
            fpr, tpr, _ = roc_curve([r[key] for r in sub], y)
            ax.plot(fpr, tpr, label=label, linewidth=1.5 if key == "ccts" else 1)
        keep = [r["ccts"] >= threshold for r in sub]
        tp = sum(k and t for k, t in zip(keep, y, strict=True)) / max(sum(y), 1)
        fp = sum(k and not t for k, t in zip(keep, y, strict=True)) / max(len(y) - sum(y), 1)
        ax.plot([fp], [tp], "ko", label=f"CCTS >= {threshold}")
        guard_keep = [r["ccts"] >= threshold and not r["guard"] for r in sub]
        gtp = sum(k and t for k, t in zip(guard_keep, y, strict=True)) / max(sum(y), 1)
        gfp = sum(k and not t for k, t in zip(guard_keep, y, strict=True)) / max(len(y) - sum(y), 1)
        ax.plot([gfp], [gtp], "k*", markersize=10, label="+ meaning guard")
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
        ax.set_xlabel("unfaithful kept (false positive rate)")
        ax.set_ylabel("faithful kept (true positive rate)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    return _finish(fig, save_to)


def plot_losses(
    curves: dict[str, Sequence[tuple[int, float]]],
    save_to: str | Path | None = None,
    ylabel: str = "training loss (assistant tokens)",
    title: str = "Training loss",
):
    """Training loss against step, one line per run (``TrainResult.losses``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, points in curves.items():
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, marker="." if len(points) < 50 else None, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(fig, save_to)


def plot_training(result, title: str, save_to: str | Path | None = None):
    """Left: training loss and validation loss against step (``TrainResult``); right: validation loss per
    language, from the starting model (step 0) to the last step."""
    import matplotlib.pyplot as plt

    fig, (ax, ax_lang) = plt.subplots(1, 2, figsize=(10, 3.4))
    if result.losses:
        steps, losses = zip(*result.losses, strict=True)
        ax.plot(steps, losses, color="#4C72B0", alpha=0.8, label="training (batch)")
    val = result.validation_curve()
    if val:
        steps, losses = zip(*val, strict=True)
        ax.plot(steps, losses, color="black", marker="o", label="validation (held out)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per answer token")
    ax.set_title(title)
    ax.legend(fontsize=8)
    langs = sorted({k for v in result.validation for k in v.by_language})
    for lang in langs:
        steps, losses = zip(*result.validation_curve(lang), strict=True)
        ax_lang.plot(steps, losses, marker=".", label=lang)
    ax_lang.set_xlabel("optimizer step")
    ax_lang.set_ylabel("validation loss")
    ax_lang.set_title("Validation loss per language")
    if langs:
        ax_lang.legend(fontsize=8, ncol=2)
    return _finish(fig, save_to)


def label_mask_html(pieces: Sequence[tuple[str, bool]]) -> str:
    """HTML of one training example, token by token: tokens that carry the loss highlighted, the prompt grey
    (``pieces`` from :func:`mmed_helpers.steps.train.label_mask`)."""
    import html

    spans = []
    for text, trained in pieces:
        style = "background:#ffe08a;color:#000" if trained else "color:#888"
        shown = html.escape(text).replace("\n", "↵<br>")
        spans.append(f'<span style="{style};border-right:1px solid #ddd">{shown}</span>')
    legend = '<p><span style="background:#ffe08a">highlighted</span>: carries the loss; grey: masked (-100)</p>'
    return legend + '<div style="font-family:monospace;line-height:1.7">' + "".join(spans) + "</div>"


def plot_accuracy(
    rows: Sequence[dict],
    group_by: str,
    title: str,
    save_to: str | Path | None = None,
    models: Sequence[str] | None = None,
):
    """Grouped bars of accuracy with 95 % intervals: one group per ``group_by`` value (``lang`` or
    ``benchmark``), one bar per model (rows from ``evaluate.summarize``)."""
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(r[group_by] for r in rows))
    present = {r["model"] for r in rows}
    models = [m for m in (models or sorted(present)) if m in present]
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(min(12.0, max(5.0, 0.3 * len(groups) * max(len(models), 1) + 2)), 3.4))
    for k, model in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for g, group in enumerate(groups):
            row = next((r for r in rows if r[group_by] == group and r["model"] == model), None)
            if row:
                xs.append(g + (k - (len(models) - 1) / 2) * width)
                ys.append(row["accuracy"])
                lo.append(row["accuracy"] - row["ci_low"])
                hi.append(row["ci_high"] - row["accuracy"])
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=2, label=model)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95 % CI)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(len(models), 4))
    return _finish(fig, save_to)


def plot_accuracy_vs_rank(rows: Sequence[dict], title: str = "Accuracy against LoRA rank", save_to=None):
    """Accuracy (95 % interval) against the adapter rank, one line per stage, the trainable parameters beside each
    point (rows from ``ablations.rank_points``: ``stage``, ``r``, ``accuracy``, ``ci_low``, ``ci_high``,
    ``trainable_parameters``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    names = {"stage1": "stage 1 (DoRA, alone)", "stage2": "stage 2 (QLoRA, on the recipe's stage 1)"}
    for k, stage in enumerate(s for s in ("stage1", "stage2") if any(r["stage"] == s for r in rows)):
        pts = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["r"])
        xs = [r["r"] * (1 + 0.04 * k) for r in pts]  # a small offset keeps overlapping intervals readable
        ys = [r["accuracy"] for r in pts]
        err = [[r["accuracy"] - r["ci_low"] for r in pts], [r["ci_high"] - r["accuracy"] for r in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=names[stage])
        for x, r in zip(xs, pts, strict=True):
            ax.annotate(
                f"{r['trainable_parameters'] / 1e3:.0f}k",
                (x, r["accuracy"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(4, 6 if k == 0 else -10),
            )
    ax.set_xscale("log", base=2)
    ranks = sorted({r["r"] for r in rows})
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set_xlabel("rank r (alpha = r/2; labels: trainable parameters)")
    ax.set_ylabel("accuracy (95 % CI)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _finish(fig, save_to)


def plot_accuracy_vs_threshold(rows: Sequence[dict], title: str = "Accuracy against the CCTS threshold", save_to=None):
    """Accuracy (95 % interval) per CCTS threshold, with the translations each stage trained on as bars on a second
    axis (rows from ``ablations.threshold_points``: ``threshold``, ``accuracy``, ``ci_low``, ``ci_high``,
    ``kept_stage1``, ``kept_stage2``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    labels = [r["threshold"] for r in rows]
    xs = list(range(len(rows)))
    kept = ax.twinx()
    kept.bar(
        [x - 0.15 for x in xs],
        [r["kept_stage1"] for r in rows],
        width=0.3,
        color="#BBBBBB",
        label="translations in stage 1's data",
    )
    kept.bar(
        [x + 0.15 for x in xs],
        [r["kept_stage2"] for r in rows],
        width=0.3,
        color="#DDDDDD",
        label="translations in stage 2's data",
    )
    kept.set_ylabel("translations kept")
    kept.set_ylim(0, max([1] + [max(r["kept_stage1"], r["kept_stage2"]) for r in rows]) * 1.3)
    err = [[r["accuracy"] - r["ci_low"] for r in rows], [r["ci_high"] - r["accuracy"] for r in rows]]
    ax.errorbar(xs, [r["accuracy"] for r in rows], yerr=err, marker="o", capsize=3, color="#4C72B0", label="accuracy")
    ax.set_zorder(kept.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xticks(xs, labels)
    ax.set_xlabel("CCTS threshold (none: every translation)")
    ax.set_ylabel("accuracy (95 % CI)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    handles = ax.get_legend_handles_labels()[0] + kept.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left")
    return _finish(fig, save_to)
