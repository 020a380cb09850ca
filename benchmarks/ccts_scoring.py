"""CCTS scoring speed, side by side on the same pairs:

* ours: :class:`CCTSScorer` (the encoder loaded once, BERTScore in batches, BLEU per pair, the calibrated score);
* ``bert_score.score`` called once on all pairs (its own batching; it loads the encoder on every call), plus the
  same BLEU, so both give a full CCTS;
* the limit: a raw forward pass of the encoder over the same texts (both sides, batched, sorted by length, no
  token matching, no BLEU) - no BERTScore implementation on this encoder can be faster.

    python benchmarks/ccts_scoring.py [--pairs 256] [--model packaged-minilm --layers 6] [--batch 64]

Prints pairs/s of each (CPU unless a GPU is present) and the largest CCTS difference between ours and the
reference. The pairs are bundled corpus sentences against a perturbed copy (every fifth word dropped), in all six
languages.
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


def raw_forward(model_dir: str, layers: int, texts: list[str], batch: int) -> None:
    """One forward pass of the encoder over ``texts`` up to hidden layer ``layers``, batched by length."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    order = sorted(texts, key=len)
    with torch.no_grad():
        for start in range(0, len(order), batch):
            enc = tok(order[start : start + batch], return_tensors="pt", padding=True, truncation=True)
            model(**enc, output_hidden_states=True).hidden_states[layers]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--model", default="packaged-minilm")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    import bert_score
    import torch

    from mmed_helpers.steps.ccts import CCTSScorer, resolve_encoder, sentence_bleu

    pairs = make_pairs(args.pairs)
    langs, sources, backs = (list(x) for x in zip(*pairs, strict=True))

    scorer = CCTSScorer(args.model, args.layers, batch_size=args.batch)
    scorer.score(sources[:2], backs[:2], langs[:2])  # load the encoder once (not timed, as in a real run)
    t0 = time.perf_counter()
    ours = scorer.score(sources, backs, langs)
    t_ours = time.perf_counter() - t0

    model = resolve_encoder(args.model)
    t0 = time.perf_counter()
    _, _, f1 = bert_score.score(backs, sources, model_type=model, num_layers=args.layers, batch_size=args.batch)
    ref = [
        scorer.combine(sentence_bleu(b, s, lang), min(max(float(f), 0.0), 1.0))
        for lang, s, b, f in zip(langs, sources, backs, f1.tolist(), strict=True)
    ]
    t_ref = time.perf_counter() - t0

    raw_forward(model, args.layers, sources[:2] + backs[:2], args.batch)  # warm-up, as for ours
    t0 = time.perf_counter()
    raw_forward(model, args.layers, sources + backs, args.batch)
    t_raw = time.perf_counter() - t0

    diff = max(abs(a.ccts - b) for a, b in zip(ours, ref, strict=True))
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{len(pairs)} pairs, encoder {args.model} (layer {args.layers}), batch {args.batch}, {device}")
    print(f"  ours (CCTSScorer, encoder loaded once)     : {len(pairs) / t_ours:8.1f} pairs/s ({t_ours:.2f} s)")
    print(f"  bert_score.score once on all pairs + BLEU  : {len(pairs) / t_ref:8.1f} pairs/s ({t_ref:.2f} s)")
    print(f"  raw encoder forward, both sides (the limit): {len(pairs) / t_raw:8.1f} pairs/s ({t_raw:.2f} s)")
    print(f"  ours vs bert_score.score {t_ref / t_ours:.2f}x; ours at {t_raw / t_ours:.0%} of the raw forward's speed")
    print(f"  max |CCTS difference| ours vs bert_score.score: {diff:.2e}")


if __name__ == "__main__":
    main()
