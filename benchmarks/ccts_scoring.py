"""CCTS scoring speed: the batched scorer (one encoder, loaded once) against calling ``bert_score.score`` once
per pair, on the same pairs.

    python benchmarks/ccts_scoring.py [--pairs 64] [--model packaged-minilm --layers 6]

Prints pairs/s of both and the ratio (CPU unless a GPU is present). The pairs are bundled corpus sentences
against a perturbed copy (every fifth word dropped), in all six languages.
"""

from __future__ import annotations

import argparse
import os
import re
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_pairs(n: int) -> list[tuple[str, str, str]]:
    from mmed_helpers.core.corpus import load_corpus

    pairs = []
    for p in load_corpus():
        for sent in re.split(r"(?<=[.。])\s*", p.text):
            if len(sent) > 20:
                words = sent.split() if " " in sent else list(sent)
                joiner = " " if " " in sent else ""
                pairs.append((p.lang, sent, joiner.join(w for i, w in enumerate(words) if i % 5 != 4)))
    return pairs[:: max(1, len(pairs) // n)][:n]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--model", default="packaged-minilm")
    parser.add_argument("--layers", type=int, default=6)
    args = parser.parse_args()

    import bert_score
    import torch

    from mmed_helpers.steps.ccts import CCTSScorer, resolve_encoder, sentence_bleu

    pairs = make_pairs(args.pairs)
    langs, sources, backs = zip(*pairs, strict=True)

    scorer = CCTSScorer(args.model, args.layers, batch_size=64)
    scorer.score(sources[:2], backs[:2], list(langs[:2]))  # load the encoder once (not timed, as in a real run)
    t0 = time.perf_counter()
    batched = scorer.score(list(sources), list(backs), list(langs))
    t_batched = time.perf_counter() - t0

    model = resolve_encoder(args.model)
    t0 = time.perf_counter()
    single = []
    for lang, src, back in pairs:
        _, _, f1 = bert_score.score([back], [src], model_type=model, num_layers=args.layers)
        single.append(0.5 * sentence_bleu(back, src, lang) + 0.5 * float(f1[0]))
    t_single = time.perf_counter() - t0

    diff = max(abs(a.ccts - b) for a, b in zip(batched, single, strict=True))
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{len(pairs)} pairs, encoder {args.model} (layer {args.layers}), {device}")
    print(f"  batched CCTSScorer       : {len(pairs) / t_batched:8.1f} pairs/s ({t_batched:.2f} s)")
    print(f"  bert_score.score per pair: {len(pairs) / t_single:8.1f} pairs/s ({t_single:.2f} s)")
    print(f"  speed-up {t_single / t_batched:.1f}x; max |CCTS difference| {diff:.2e}")


if __name__ == "__main__":
    main()
