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
