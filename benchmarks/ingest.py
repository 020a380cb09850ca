"""Ingesting your own corpus: passages per second and peak memory as the corpus grows from 5 to 50 MB.

    python benchmarks/ingest.py [--sizes 5 10 25 50] [--quota 100] [--tokenizer DIR]

The benchmark writes its corpus itself: folders of ``.txt`` files in all six languages, each document a run of
paragraphs recombined from the sentences of the bundled passages (so nearly every passage is new text), 2-20
KB per file. Each size is ingested in a fresh process (``datagen.corpus.path`` as notebook 01 reads it:
cutting to ``max_passage_tokens``, language identification, exact and near duplicates, a seeded sample of
``--quota`` passages per language), which reports its wall time, its peak resident memory (and what it was
before ingestion started). Flat memory means the peak stays put while the corpus grows tenfold: what ingestion
holds is bounded by the sample's candidates (twice the quota per language) and an 8-byte hash per passage.

Measured on 2 CPU cores (AMD EPYC): with ``--quota 100`` the peak RSS is 148 MB at 5, 10, 25 and 50 MB of text
(1,172 to 11,460 passages, 350-580 passages/s); with ``--quota 500`` it grows from 148 to 188 MB while the
candidates fill (6,000 passages of ~4 KB), and stops there. ``--tokenizer`` counts with
a real tokenizer (a model folder) instead of the approximate count.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_corpus(root: Path, megabytes: float, seed: int = 0) -> int:
    """Write about ``megabytes`` MB of text files under ``root``; returns the bytes written."""
    from mmed_helpers.core.corpus import load_corpus

    rng = random.Random(seed)
    sentences: dict[str, list[str]] = {}
    for p in load_corpus():
        parts = re.split(r"(?<=[.!?。！？])\s*", p.text.replace("\n\n", " "))
        sentences.setdefault(p.lang, []).extend(s for s in parts if len(s) > 10)
    langs = sorted(sentences)
    written, n = 0, 0
    target = int(megabytes * 2**20)
    while written < target:
        lang = langs[n % len(langs)]
        sep = "" if lang in ("zh", "ja") else " "
        doc = "\n\n".join(sep.join(rng.sample(sentences[lang], 4)) for _ in range(rng.randint(3, 30)))
        path = root / lang / f"{n // 1000:03d}" / f"doc{n:06d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = doc.encode("utf-8")
        path.write_bytes(data)
        written += len(data)
        n += 1
    return written


def measure(corpus: str, quota: int, tokenizer: str) -> dict:
    """Ingest ``corpus`` in this process; what it took."""
    from mmed_helpers.core.config import load_profile
    from mmed_helpers.core.ingest import load_passages, tokenizer_counter

    count = None
    if tokenizer:
        from transformers import AutoTokenizer

        count = tokenizer_counter(AutoTokenizer.from_pretrained(tokenizer))
    cfg = load_profile("full", {"datagen.corpus.path": corpus, "datagen.passages_per_language": quota})
    from mmed_helpers.core.quality import detect_language

    detect_language("warm-up: the language model is loaded before the baseline is taken")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    passages, report = load_passages(cfg, count, progress=False)
    wall = time.perf_counter() - t
    return {
        "seconds": wall,
        "passages": report.passages,
        "kept": len(passages),
        "rss_before_mb": before / 1024,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[5, 10, 25, 50])
    ap.add_argument("--quota", type=int, default=100)
    ap.add_argument("--tokenizer", default="")
    ap.add_argument("--measure", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.quota, args.tokenizer)))
        return
    print(
        f"{'corpus':>8s} {'passages':>9s} {'kept':>6s} {'seconds':>8s} {'passages/s':>11s} {'MB/s':>6s} "
        f"{'RSS before':>11s} {'peak RSS':>9s} {'growth':>7s}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmed-ingest-bench-") as tmp:
        for size in args.sizes:
            root = Path(tmp) / f"{size:g}MB"
            nbytes = write_corpus(root, size)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    str(root),
                    "--quota",
                    str(args.quota),
                    "--tokenizer",
                    args.tokenizer,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(
                f"{nbytes / 2**20:7.1f}M {r['passages']:9d} {r['kept']:6d} {r['seconds']:8.1f} "
                f"{r['passages'] / r['seconds']:11.0f} {nbytes / 2**20 / r['seconds']:6.2f} "
                f"{r['rss_before_mb']:10.0f}M {r['rss_peak_mb']:8.0f}M "
                f"{r['rss_peak_mb'] - r['rss_before_mb']:6.0f}M"
            )
    first, last = rows[0], rows[-1]
    print(
        f"\nfrom {args.sizes[0]:g} to {args.sizes[-1]:g} MB ({args.sizes[-1] / args.sizes[0]:.0f}x the text): "
        f"peak RSS x{last['rss_peak_mb'] / first['rss_peak_mb']:.2f} ({first['rss_peak_mb']:.0f} -> "
        f"{last['rss_peak_mb']:.0f} MB), passages/s "
        f"x{(last['passages'] / last['seconds']) / (first['passages'] / first['seconds']):.2f}"
    )


if __name__ == "__main__":
    main()
