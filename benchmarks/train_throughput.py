"""Training throughput and peak memory of stage 1 (DoRA r=32, alpha=16) and stage 2 (QLoRA NF4 r=16, alpha=8)
through the course's training API, with Unsloth and with plain transformers + PEFT, same configs.

    python benchmarks/train_throughput.py                          # CPU: the tiny shape
    python benchmarks/train_throughput.py --shape llama-3-8b --seq 2048 --batch 1 --steps 12   # one GPU

Models are built from a config with random weights (speed and memory do not depend on the values), so nothing
is downloaded. Every example is exactly ``--seq`` tokens. Throughput is measured over the steps after the first
``--warmup`` (Unsloth compiles kernels on its first step). Each run is a separate process, since importing
Unsloth patches transformers for the whole process. Prints a table and the Unsloth / PEFT ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "llama-3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
}

WORKER = """
import json, sys
from pathlib import Path
from mmed_helpers.core.config import load_profile
from mmed_helpers.steps.train import train_stage
model, data, out, stage, seq, batch, steps, warmup = sys.argv[1:9]
seq, batch, steps, warmup = int(seq), int(batch), int(steps), int(warmup)
over = {f"{stage}.max_steps": steps, f"{stage}.per_device_train_batch_size": batch,
        f"{stage}.gradient_accumulation_steps": 1, f"{stage}.save_steps": 10**6, f"{stage}.logging_steps": 1,
        f"{stage}.gradient_checkpointing": True, "model.max_seq_length": seq, "model.dtype": "auto"}
cfg = load_profile("smoke", over)
r = train_stage(stage, getattr(cfg, stage), model, [data], out, cfg.model, progress=False)
timed = r.step_seconds[warmup:] or r.step_seconds
print("RESULT=" + json.dumps({"backend": r.backend, "tok_s": seq * batch / (sum(timed) / len(timed)),
                              "peak_gib": r.peak_memory_gib, "memory": r.memory_kind, "steps": r.global_step}))
"""


def build_model(shape: str, out: Path, dtype: str) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmed_helpers.core.config import TinyModelConfig
    from mmed_helpers.core.tiny import build_tiny_model

    tiny = build_tiny_model(out / "tokenizer-source", TinyModelConfig())
    cfg = LlamaConfig(
        **SHAPES[shape],
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=4,
        pad_token_id=5,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    path = out / shape
    model.save_pretrained(path, safe_serialization=True)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny).save_pretrained(path)
    del model
    return path


def build_data(out: Path, seq: int, n: int) -> Path:
    """Chat records long enough that every example is truncated to exactly ``seq`` tokens."""
    from mmed_helpers.core.corpus import load_corpus
    from mmed_helpers.core.records import IFTSample, save_dataset, to_dataset

    text = " ".join(p.text for p in load_corpus(["en"]))
    words = text.split()
    items = []
    for i in range(n):
        start = (i * 97) % len(words)
        body = " ".join((words[start:] + words)[: seq * 2])
        items.append(IFTSample(f"b{i}", "en", "Summarise.", body))
    return save_dataset(to_dataset(items, "ift"), out / "data")


def run(model: Path, data: Path, out: Path, stage: str, args, unsloth: bool) -> dict:
    env = {
        **os.environ,
        "MMED_TRAIN_BACKEND": "unsloth" if unsloth else "peft",
        "MMED_DISABLE_UNSLOTH": "0",
        "HF_HUB_OFFLINE": "1",
        "UNSLOTH_DISABLE_STATISTICS": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER,
            str(model),
            str(data),
            str(out),
            stage,
            str(args.seq),
            str(args.batch),
            str(args.steps),
            str(args.warmup),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")), None)
    if proc.returncode or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0][:200]}
    return json.loads(line[7:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", help="where to write results.json (default: print only)")
    args = parser.parse_args()

    import torch

    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_model(args.shape, tmp, dtype)
        data = build_data(tmp, args.seq, n=max(args.steps * args.batch, 8))
        for stage, label in (("stage1", "DoRA r32 a16 (stage 1)"), ("stage2", "QLoRA NF4 r16 a8 (stage 2)")):
            res = {
                name: run(model, data, tmp / f"{stage}-{name}", stage, args, unsloth=(name == "unsloth"))
                for name in ("peft", "unsloth")
            }
            rows.append((label, res))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"{args.shape}, seq {args.seq}, batch {args.batch}, {args.steps} steps ({args.warmup} warm-up), {device}")
    header = ("config", "PEFT tok/s", "Unsloth tok/s", "speed-up", "PEFT GiB", "Unsloth GiB")
    print(f"{header[0]:28s} {header[1]:>11s} {header[2]:>14s} {header[3]:>9s} {header[4]:>9s} {header[5]:>12s}")
    for label, res in rows:
        p, u = res["peft"], res["unsloth"]
        if "error" in p or "error" in u:
            print(f"{label:28s} peft: {p.get('error', 'ok')} | unsloth: {u.get('error', 'ok')}")
            continue
        print(
            f"{label:28s} {p['tok_s']:11,.0f} {u['tok_s']:14,.0f} {u['tok_s'] / p['tok_s']:8.2f}x "
            f"{p['peak_gib']:9.2f} {u['peak_gib']:12.2f}   ({u['memory']}, backends {p['backend']}/{u['backend']})"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "device": device, "rows": rows}, indent=2))
    print("tok/s: mean over the timed steps; memory: peak GPU allocation, or peak process RSS on CPU")


if __name__ == "__main__":
    main()
