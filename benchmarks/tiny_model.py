"""Speed of the embedded smoke model: build time, load time (transformers and Unsloth), forward tokens/s.

    python benchmarks/tiny_model.py [--repeats 3]

Prints a table; numbers are for this machine (CPU unless a GPU is present).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")

UNSLOTH_LOAD = """
import sys, time
t0 = time.perf_counter()
import unsloth  # noqa: F401
t1 = time.perf_counter()
from unsloth import FastLanguageModel
import torch
FastLanguageModel.from_pretrained(sys.argv[1], max_seq_length=256, dtype=torch.float32, load_in_4bit=False)
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmed_helpers.core.config import TinyModelConfig
    from mmed_helpers.core.corpus import load_corpus
    from mmed_helpers.core.tiny import build_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        builds = []
        for i in range(args.repeats):
            t = time.perf_counter()
            path = build_tiny_model(Path(tmp) / f"m{i}", TinyModelConfig())
            builds.append(time.perf_counter() - t)
        rows.append(("build (tokenizer training + model)", f"{statistics.median(builds):.3f} s"))

        t = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        rows.append(("load with transformers Auto classes", f"{time.perf_counter() - t:.3f} s"))

        texts = [p.text for p in load_corpus()][:16]
        batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=256)
        n_tokens = int(batch["attention_mask"].sum())
        speeds = []
        with torch.no_grad():
            model(**batch)  # warm-up
            for _ in range(args.repeats):
                t = time.perf_counter()
                model(**batch)
                speeds.append(n_tokens / (time.perf_counter() - t))
        rows.append((f"forward, batch {len(texts)} x <=256 tokens", f"{statistics.median(speeds):,.0f} tokens/s"))

        proc = subprocess.run([sys.executable, "-c", UNSLOTH_LOAD, str(path)], capture_output=True, text=True)
        if proc.returncode == 0:
            imp, load = proc.stdout.strip().splitlines()[-1].split()
            rows.append(("import unsloth", f"{float(imp):.3f} s"))
            rows.append(("load with Unsloth FastLanguageModel", f"{float(load):.3f} s"))
        else:
            rows.append(("Unsloth", "not importable: " + (proc.stderr.strip().splitlines() or ["?"])[-1]))

    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"tiny model benchmark on {device}, median of {args.repeats}")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
