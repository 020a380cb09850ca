"""How many requests to keep in flight: the course's server driven at 1, 4, 16 and 64 concurrent requests.

    python benchmarks/serve_concurrency.py [--levels 1 4 16 64] [--requests 64] [--batch-size 16]
                                           [--model DIR] [--max-tokens 32]

Starts ``mmed-course serve``'s server (``ChatServer``, batching concurrent requests up to ``--batch-size``) on the
embedded tiny model (or ``--model``), and sends ``--requests`` chat completions through the official ``openai``
client at each concurrency, as notebook 01's endpoint backend does (``datagen.batch_size`` is that
concurrency). Prints throughput (requests and output tokens per second), latency percentiles and the mean size
of the batches the server generated: throughput grows with concurrency while the server can batch more, and
past that only latency grows. Point ``--url`` at any OpenAI-compatible server (vLLM) to measure it instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Summarise the first-line treatment of community-acquired pneumonia in adults.",
    "What are the diagnostic criteria for diabetes mellitus?",
    "Explain how heart failure with reduced ejection fraction is treated.",
    "¿Cuáles son los síntomas del dengue grave?",
    "Quels sont les signes d'une embolie pulmonaire ?",
    "慢性乙型肝炎的治疗目标是什么？",
    "Каковы признаки сепсиса у взрослых?",
    "急性心筋梗塞の初期治療について説明してください。",
]


async def drive(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=os.environ.get("OPENAI_API_KEY", "no-key"), base_url=url, max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(i: int) -> None:
        nonlocal tokens
        async with gate:
            t = time.perf_counter()
            reply = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                max_tokens=max_tokens,
                temperature=0.0,
            )
            latencies.append(time.perf_counter() - t)
            tokens += reply.usage.completion_tokens if reply.usage else 0

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    wall = time.perf_counter() - start
    await client.close()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"wall": wall, "rps": requests / wall, "tps": tokens / wall, "p50": q[49], "p90": q[89], "p99": q[98]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--model", default="", help="a model folder (default: the embedded tiny model, built here)")
    ap.add_argument("--url", default="", help="measure this server instead (its --served-model-name: --name)")
    ap.add_argument("--name", default="tiny")
    args = ap.parse_args()

    server = None
    url, name = args.url, args.name
    if not url:
        from mmed_helpers.core.config import TinyModelConfig
        from mmed_helpers.core.llm import LocalBackend
        from mmed_helpers.core.tiny import build_tiny_model
        from mmed_helpers.serve import ChatServer

        where = Path(tempfile.mkdtemp(prefix="mmed-serve-bench-")) / "tiny"
        model = args.model or str(build_tiny_model(where, TinyModelConfig()))
        server = ChatServer(LocalBackend(model, batch_size=args.batch_size), name, batch_size=args.batch_size)
        server.start()
        url = server.base_url
    print(
        f"server {url} (batch size {args.batch_size if server else '?'}), {args.requests} requests per level, "
        f"{args.max_tokens} new tokens each"
    )
    print(
        f"{'concurrency':>11s} {'req/s':>7s} {'tokens/s':>9s} {'p50 s':>7s} {'p90 s':>7s} {'p99 s':>7s} "
        f"{'mean batch':>10s}"
    )
    try:
        for level in args.levels:
            before = len(server.batch_sizes) if server else 0
            r = asyncio.run(drive(url, name, level, args.requests, args.max_tokens))
            sizes = server.batch_sizes[before:] if server else []
            batch = f"{statistics.fmean(sizes):10.1f}" if sizes else f"{'?':>10s}"
            print(
                f"{level:11d} {r['rps']:7.2f} {r['tps']:9.0f} {r['p50']:7.2f} {r['p90']:7.2f} {r['p99']:7.2f} {batch}"
            )
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
