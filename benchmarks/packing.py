"""Padding-free packing against one padded row per sample, on the course's real length distribution.

    python benchmarks/packing.py                               # CPU: the smoke tiny model, the seed records
    python benchmarks/packing.py --run-dir runs/smoke          # + the run's generated and translated records
    python benchmarks/packing.py --model /models/llama --max-length 2048 --batch 8   # one GPU, your model

The records are the ones the stages train on: the bundled seed items of all six languages (MMed-IFT for stage 1,
MMed-IFT-MC for stage 2) or, with ``--run-dir``, that run's training data (seed and generated records, kept
translations). They are tokenized with the
model's own chat template exactly as training does (:func:`~mmed_helpers.steps.train.tokenize_completions`),
cut into the same seeded batches for both modes, and trained through the course's stage setup
(:func:`~mmed_helpers.steps.train.load_for_training`: DoRA r=32 for stage 1, QLoRA NF4 r=16 for stage 2) with
the two collators the trainer uses, :class:`~mmed_helpers.steps.train.CompletionCollator` (padded) and
:class:`~mmed_helpers.steps.train.PackedCollator`. The modes alternate batch by batch in one process, so both
see the same machine; the first ``--warmup`` batches of each are not timed.

Printed per stage: tokens computed per step (pad included), the share that is padding, real tokens/s, trained
(loss-carrying) tokens/s, and the packed / padded ratio of trained tokens/s.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

STAGES = {"stage1": "ift", "stage2": "mc"}


def records(kind: str, run_dir: Path | None, tmp: Path) -> list[Path]:
    """Dataset folders of one kind: a run's training data for that stage (its seed and generated records and
    the kept translations), or else the bundled seed items of all six languages."""
    from mmed_helpers.core.languages import LANGUAGES
    from mmed_helpers.core.layout import RunLayout
    from mmed_helpers.core.records import save_dataset, to_dataset
    from mmed_helpers.steps.generate import load_seeds

    if run_dir is not None:
        return RunLayout(run_dir).training_data("stage1" if kind == "ift" else "stage2")
    return [save_dataset(to_dataset(load_seeds(kind, list(LANGUAGES)), kind), tmp / f"seed-{kind}")]


def run_stage(stage_name: str, model_path: Path, data: list[Path], args) -> dict:
    import torch

    from mmed_helpers.core.config import load_profile
    from mmed_helpers.steps.train import (
        CompletionCollator,
        PackedCollator,
        load_for_training,
        load_sft_dataset,
        tokenize_completions,
    )

    cfg = load_profile("smoke", {"model.max_seq_length": args.max_length})
    stage = getattr(cfg, stage_name)
    model, tok, backend = load_for_training(model_path, stage, cfg.model)
    features = tokenize_completions(load_sft_dataset(data), tok, args.max_length)
    order = list(range(len(features)))
    random.Random(0).shuffle(order)
    batches = [order[i : i + args.batch] for i in range(0, len(order) - args.batch + 1, args.batch)]
    batches = (batches * (1 + (args.steps + args.warmup) // max(1, len(batches))))[: args.steps + args.warmup]
    collators = {"padded": CompletionCollator(tok), "packed": PackedCollator(tok)}
    device = next(model.parameters()).device
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    stats = {name: {"seconds": 0.0, "computed": 0, "real": 0, "trained": 0, "steps": 0} for name in collators}
    model.train()
    for n, idx in enumerate(batches):
        rows = [features[i] for i in idx]
        for name, collate in collators.items():
            batch = collate(rows)
            tensors = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = model(**tensors).loss
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if n >= args.warmup:
                s = stats[name]
                s["seconds"] += dt
                s["computed"] += batch["input_ids"].numel()
                s["real"] += sum(len(r["input_ids"]) for r in rows)
                s["trained"] += sum(sum(x != -100 for x in r["labels"][1:]) for r in rows)
                s["steps"] += 1
    lengths = sorted(len(r) for r in features["input_ids"])
    return {
        "backend": backend,
        "examples": len(features),
        "median_length": lengths[len(lengths) // 2],
        "max_length_seen": lengths[-1],
        **stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model directory (default: the smoke tiny model, built or cached)")
    parser.add_argument("--run-dir", type=Path, help="use this run's training data instead of the seed records")
    parser.add_argument("--max-length", type=int, default=256, help="model.max_seq_length (smoke: 256)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--stages", nargs="+", choices=sorted(STAGES), default=sorted(STAGES))
    args = parser.parse_args()

    import torch

    from mmed_helpers.core.config import load_profile
    from mmed_helpers.core.tiny import build_tiny_model_cached

    tmp_dir = tempfile.TemporaryDirectory()
    tmp = Path(tmp_dir.name)
    model = Path(args.model) if args.model else build_tiny_model_cached(tmp / "tiny", load_profile("smoke").tiny)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"model {model}, max length {args.max_length}, batch {args.batch}, {args.steps} timed steps, {device}")
    header = f"{'stage':8s} {'mode':7s} {'tokens/step':>11s} {'padding':>8s} {'real tok/s':>11s} {'trained tok/s':>14s}"
    with tmp_dir:
        for stage in args.stages:
            res = run_stage(stage, model, records(STAGES[stage], args.run_dir, tmp), args)
            print(
                f"\n{stage}: {res['examples']} records ({res['backend']}), median {res['median_length']} tokens, "
                f"longest {res['max_length_seen']} (cut at {args.max_length})"
            )
            print(header)
            rate = {}
            for mode in ("padded", "packed"):
                s = res[mode]
                rate[mode] = s["trained"] / s["seconds"]
                print(
                    f"{stage:8s} {mode:7s} {s['computed'] / s['steps']:11.0f} {1 - s['real'] / s['computed']:8.1%} "
                    f"{s['real'] / s['seconds']:11,.0f} {rate[mode]:14,.0f}"
                )
            print(f"{stage}: packed / padded trained tokens/s = {rate['packed'] / rate['padded']:.2f}x")


if __name__ == "__main__":
    main()
