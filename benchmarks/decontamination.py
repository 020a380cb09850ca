"""Test-set decontamination at the paper's scale: how long the benchmark index takes to build, how much memory
it holds, and how many training texts per second it checks.

    python benchmarks/decontamination.py [--items 14000] [--words 150] [--texts 5000]

The suite is synthetic and of full size (MedQA's 1,273 test questions, MedMCQA's 4,183 validation questions,
PubMedQA's 500 abstracts and MMedBench's ~8,500 test questions: about 14,000 items of question, options and
context, ~150 words each); the training texts are 120 words (a generated answer with its question). Beside the
course's index (sorted 64-bit hashes), the same n-grams held as a Python ``set`` of tuples, measured in the same
run, show what the array layout saves.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc

from mmed_helpers.core.decontam import NGRAM, BenchmarkIndex, ngrams, words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=14000)
    ap.add_argument("--words", type=int, default=150)
    ap.add_argument("--texts", type=int, default=5000)
    args = ap.parse_args()
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(20000)]
    suite = [("bench", str(i), " ".join(rng.choices(vocab, k=args.words))) for i in range(args.items)]
    # a tenth of the training texts quote 20 words of a benchmark item: the check must find exactly those
    train = []
    for k in range(args.texts):
        text = rng.choices(vocab, k=120)
        if k % 10 == 0:
            source = suite[rng.randrange(len(suite))][2].split()
            text[50:70] = source[10:30]
        train.append(" ".join(text))

    tracemalloc.start()
    t = time.perf_counter()
    index = BenchmarkIndex.build(suite)
    build_s = time.perf_counter() - t
    index_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()

    tracemalloc.start()
    as_set = {g for _, _, text in suite for g in ngrams(words(text), NGRAM)}
    set_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()

    t = time.perf_counter()
    found = sum(bool(index.hits(x)) for x in train)
    check_s = time.perf_counter() - t

    print(f"benchmark suite: {args.items} items x {args.words} words -> {len(index.hashes):,} {NGRAM}-grams")
    print(
        f"index build: {build_s:.1f} s; memory held: {index_mb:.0f} MiB (as a Python set of tuples: {set_mb:.0f} MiB,"
        f" {set_mb / max(index_mb, 1e-9):.1f}x)"
    )
    print(
        f"check: {args.texts / check_s:,.0f} training texts/s of 120 words; {found} flagged, "
        f"{(args.texts + 9) // 10} planted"
    )
    print(f"estimate for 200,000 items of 3 texts each: {200000 * 3 / (args.texts / check_s) / 60:.1f} min")
    del as_set


if __name__ == "__main__":
    main()
