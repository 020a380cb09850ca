"""What a manifest costs on a model directory: SHA-256 of every byte (``file_sha256``) against the cheap
``model_identity`` (names, sizes, modification times, small files and safetensors headers), side by side.

    python benchmarks/manifest_hashing.py              # a 1 GiB model directory in a temporary folder
    python benchmarks/manifest_hashing.py --gib 4

The directory is laid out as transformers saves a model (``config.json``, ``model.safetensors`` with a real
safetensors header, tokenizer files). The first read of each method pays for the disk; both are timed warm
(best of three), which favours the full hash: on an 8B model's 16 GB, cold, it is far slower still.
"""

from __future__ import annotations

import argparse
import json
import struct
import tempfile
import time
from pathlib import Path


def build(root: Path, gib: float) -> Path:
    n = int(gib * 2**30) // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}}).encode()
    with open(root / "model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        chunk = bytes(range(256)) * (2**22)  # a 1 GiB buffer, written as often as needed
        left = n * 4
        while left:
            fh.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    (root / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {str(i): i for i in range(50000)}}}))
    return root


def best(fn, path, n=3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()

    from mmed_helpers.core.artifacts import file_sha256, model_identity

    with tempfile.TemporaryDirectory() as tmp:
        root = build(Path(tmp), args.gib)
        full, cheap = best(file_sha256, root), best(model_identity, root)
        print(f"model directory of {args.gib:g} GiB")
        print(f"file_sha256 (every byte)   {full:8.3f} s")
        print(f"model_identity (metadata)  {cheap:8.4f} s")
        print(f"ratio                      {full / cheap:8.0f}x")


if __name__ == "__main__":
    main()
