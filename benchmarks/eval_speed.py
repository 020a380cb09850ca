"""Log-likelihood evaluation speed: the course's evaluator against lm-evaluation-harness, same model, same
items, same protocol (acc over single-letter choices).

    python benchmarks/eval_speed.py                          # the tiny smoke model, bundled MedQA + MMedBench
    python benchmarks/eval_speed.py --model DIR --batch-size 16

Prints items/s of both, the ratio, and whether the accuracies agree. Needs ``lm-eval[hf]`` (dev extra).

Then the peak memory of scoring, each variant in a fresh process on the same items: the course's scorer (logits
and log-softmax at the continuation positions only) against the naive way (log-softmax over every position of
every sequence, ``batch x length x vocabulary`` in float32). GPU: peak allocated; CPU: growth of the process's
peak resident memory during scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model directory (default: build the tiny smoke model)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--memory-child", choices=["course", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return _memory_child(args)

    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmed_helpers.core.config import TinyModelConfig
    from mmed_helpers.core.tiny import build_tiny_model
    from mmed_helpers.steps.evaluate import loglik_scores

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model or str(build_tiny_model(tmp / "tiny", TinyModelConfig()))
        items = _items()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        loglik_scores(model, tok, items[:2], args.batch_size, progress=False)  # warm-up
        t0 = time.perf_counter()
        ours = loglik_scores(model, tok, items, args.batch_size, progress=False)
        t_ours = time.perf_counter() - t0
        acc_ours = sum(s.pred == s.item.answers[0] for s in ours) / len(ours)

        data = tmp / "items.jsonl"
        data.write_text(
            "\n".join(
                json.dumps(
                    {
                        "prompt": it.loglik_context(),
                        "choices": [c.lstrip() for c in it.loglik_choices()],
                        "target": it.letters.index(it.answers[0]),
                    },
                    ensure_ascii=False,
                )
                for it in items
            )
            + "\n"
        )
        (tmp / "task.yaml").write_text(
            "task: mmed_course_speed\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
            "test_split: test\noutput_type: multiple_choice\n"
            "doc_to_text: '{{prompt}}'\ndoc_to_choice: choices\ndoc_to_target: target\nmetric_list:\n  - metric: acc\n"
        )
        t0 = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_dir},dtype=float32",
            tasks=["mmed_course_speed"],
            task_manager=TaskManager(include_path=str(tmp)),
            batch_size=args.batch_size,
            device=device,
        )
        t_harness = time.perf_counter() - t0
        acc_harness = out["results"]["mmed_course_speed"]["acc,none"]
        memory = {v: _memory_in_child(v, model_dir, args.batch_size) for v in ("course", "naive")}

    n = len(items)
    print(f"{n} items, model {args.model or 'tiny smoke model'}, {device}, batch {args.batch_size}")
    print(f"  course evaluator      : {n / t_ours:8.1f} items/s ({t_ours:.2f} s), acc {acc_ours:.3f}")
    print(
        f"  lm-evaluation-harness : {n / t_harness:8.1f} items/s ({t_harness:.2f} s incl. its set-up), "
        f"acc {acc_harness:.3f}"
    )
    print(
        f"  ratio {t_harness / t_ours:.1f}x; accuracies {'agree' if abs(acc_ours - acc_harness) < 1e-9 else 'DIFFER'}"
    )

    unit = "GiB allocated on the GPU" if device == "cuda" else "MiB of resident memory above the loaded model"
    course, naive = memory["course"], memory["naive"]
    print(f"  peak memory of scoring ({unit}): course {course:.1f}, naive full log-softmax {naive:.1f}", end="")
    print(f", ratio {naive / course:.1f}x" if course > 0 else "")


def _items():
    from mmed_helpers.steps.benchmarks import load_benchmark

    return load_benchmark("medqa", "bundled").items + [
        it for it in load_benchmark("mmedbench", "bundled", ["en", "zh", "ru", "es"]).items if not it.multi
    ]


def _memory_in_child(variant: str, model_dir: str, batch_size: int) -> float:
    cmd = [sys.executable, __file__, "--memory-child", variant, "--model", model_dir, "--batch-size", str(batch_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak"]


def _naive_scores(model, tok, items, batch_size: int) -> list[list[float]]:
    """Log-likelihoods the naive way: full logits and log-softmax over every position, per batch."""
    import torch

    from mmed_helpers.steps.evaluate import encode_pair

    seqs = [
        (i, j, *encode_pair(tok, it.loglik_context(), c))
        for i, it in enumerate(items)
        for j, c in enumerate(it.loglik_choices())
    ]
    out = [[0.0] * len(it.options) for it in items]
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        width = max(len(c) + len(t) for _, _, c, t in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (_, _, ctx, cont) in enumerate(chunk):
            ids[row, : len(ctx) + len(cont)] = torch.tensor(ctx + cont)
            mask[row, : len(ctx) + len(cont)] = 1
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for row, (i, j, ctx, cont) in enumerate(chunk):
            out[i][j] = float(sum(logp[row, len(ctx) - 1 + k, t] for k, t in enumerate(cont)))
    return out


def _memory_child(args) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmed_helpers.steps.evaluate import loglik_scores

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(args.model).to(device).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    items = _items()
    score = (
        (lambda its: loglik_scores(model, tok, its, args.batch_size, progress=False))
        if args.memory_child == "course"
        else (lambda its: _naive_scores(model.to(device), tok, its, args.batch_size))
    )
    score(items[:1])  # warm-up: allocator and kernels
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        score(items)
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:  # the process's resident memory, sampled every millisecond while scoring runs
        import threading

        import psutil

        proc, samples, done = psutil.Process(), [], threading.Event()
        before = proc.memory_info().rss

        def sample():
            while not done.is_set():
                samples.append(proc.memory_info().rss)
                time.sleep(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        score(items)
        done.set()
        sampler.join()
        peak = (max(samples, default=before) - before) / 2**20
    print(json.dumps({"peak": peak}))


if __name__ == "__main__":
    main()
