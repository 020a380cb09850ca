"""Batched local generation vs one prompt at a time: same model, same prompts, greedy decoding.

    python benchmarks/generation_batching.py                      # the embedded tiny model
    python benchmarks/generation_batching.py --model DIR --prompts 32 --batch-size 16 --max-new-tokens 128

Prints generated tokens/s for both and the speed-up. The prompts are the course's real condense prompts
(one-shot, six languages), so prompt lengths vary as they do in notebook 01.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model directory (default: build the tiny smoke model)")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    import torch

    from mmed_helpers.core.config import TinyModelConfig
    from mmed_helpers.core.corpus import load_corpus
    from mmed_helpers.core.llm import GenerationParams, LocalBackend
    from mmed_helpers.core.tiny import build_tiny_model
    from mmed_helpers.steps.generate import load_prompt

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_tiny_model(os.path.join(tmp, "tiny"), TinyModelConfig()))
        backend = LocalBackend(model, batch_size=args.batch_size)
        passages = load_corpus()
        convs = [load_prompt("condense", p.lang).messages(p.text) for p in passages][: args.prompts]
        # tokens/s counts each output's own generated tokens, so early stops are accounted for in both modes
        params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
        backend.generate(convs[:2], params)  # warm-up

        results = {}
        for label, bs in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
            backend.batch_size = bs
            t0 = time.perf_counter()
            out = backend.generate(convs, params)
            seconds = time.perf_counter() - t0
            tokens = sum(c.completion_tokens for c in out)
            results[label] = tokens / seconds
            print(f"{label:>16}: {tokens} tokens in {seconds:6.2f} s = {tokens / seconds:8.1f} tokens/s")
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    one, batched = results.values()
    name = args.model or "tiny smoke model"
    print(f"model {name} on {device}: batched / one-at-a-time = {batched / one:.2f}x")


if __name__ == "__main__":
    main()
