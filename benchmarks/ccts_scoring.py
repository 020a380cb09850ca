"""CCTS scoring speed, side by side on the same pairs:

* ours: :class:`CCTSScorer` (the encoder loaded once, BERTScore in batches, BLEU per pair, the calibrated score);
* ``bert_score.score`` called once on all pairs (its own batching; it loads the encoder on every call), plus the
  same BLEU, so both give a full CCTS;
* the limit: a raw forward pass of the encoder over the same texts (loaded beforehand; both sides, batched, sorted by
  length, no token matching, no BLEU) - no BERTScore implementation on this encoder can be faster.

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


def load_encoder(model_dir: str):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()


def raw_forward(encoder, layers: int, texts: list[str], batch: int) -> None:
    """One forward pass of the encoder (loaded beforehand) over ``texts`` up to hidden layer ``layers``, batched
    by token count."""
    import torch

    tok, model = encoder
    order = sorted(texts, key=lambda t: len(tok(t, truncation=True)["input_ids"]))  # by tokens, as bert_score
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            enc = tok(order[start : start + batch], return_tensors="pt", padding=True, truncation=True)
            model(**enc, output_hidden_states=True).hidden_states[layers]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--model", default="packaged-minilm")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each; the best is reported")
    args = parser.parse_args()

    import bert_score
    import torch

    from mmed_helpers.steps.ccts import CCTSScorer, resolve_encoder, sentence_bleu

    pairs = make_pairs(args.pairs)
    langs, sources, backs = (list(x) for x in zip(*pairs, strict=True))

    scorer = CCTSScorer(args.model, args.layers, batch_size=args.batch)
    scorer.score(sources[:2], backs[:2], langs[:2])  # load the encoder once (not timed, as in a real run)
    model = resolve_encoder(args.model)
    encoder = load_encoder(model)
    raw_forward(encoder, args.layers, sources[:2] + backs[:2], args.batch)  # warm-up, as for ours

    def run_ours():
        return scorer.score(sources, backs, langs)

    def run_ref():
        _, _, f1 = bert_score.score(backs, sources, model_type=model, num_layers=args.layers, batch_size=args.batch)
        return [
            scorer.combine(sentence_bleu(b, s, lang), min(max(float(f), 0.0), 1.0))
            for lang, s, b, f in zip(langs, sources, backs, f1.tolist(), strict=True)
        ]

    def run_raw():
        raw_forward(encoder, args.layers, sources + backs, args.batch)

    # the three interleaved, best of --repeats each: on a shared CPU one run alone is noisy
    times: dict[str, list[float]] = {"ours": [], "ref": [], "raw": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", run_ours), ("ref", run_ref), ("raw", run_raw)):
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            if name == "ours":
                ours = out
            elif name == "ref":
                ref = out
    t_ours, t_ref, t_raw = (min(times[k]) for k in ("ours", "ref", "raw"))

    diff = max(abs(a.ccts - b) for a, b in zip(ours, ref, strict=True))
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"{len(pairs)} pairs, encoder {args.model} (layer {args.layers}), batch {args.batch}, {device}, "
        f"best of {args.repeats}"
    )
    print(f"  ours (CCTSScorer, encoder loaded once)     : {len(pairs) / t_ours:8.1f} pairs/s ({t_ours:.2f} s)")
    print(f"  bert_score.score once on all pairs + BLEU  : {len(pairs) / t_ref:8.1f} pairs/s ({t_ref:.2f} s)")
    print(f"  raw encoder forward, both sides (the limit): {len(pairs) / t_raw:8.1f} pairs/s ({t_raw:.2f} s)")
    print(f"  ours vs bert_score.score {t_ref / t_ours:.2f}x; ours at {t_raw / t_ours:.0%} of the raw forward's speed")
    print(f"  max |CCTS difference| ours vs bert_score.score: {diff:.2e}")


if __name__ == "__main__":
    main()
