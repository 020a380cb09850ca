"""Log-likelihood evaluation speed: the course's evaluator against lm-evaluation-harness, same model, same
items, same protocol (acc over single-letter choices).

    python benchmarks/eval_speed.py                          # the tiny smoke model, bundled MedQA + MMedBench
    python benchmarks/eval_speed.py --model DIR --batch-size 16

Prints items/s of both, the ratio, and whether the accuracies agree. Needs ``lm-eval[hf]`` (dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model directory (default: build the tiny smoke model)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmed_helpers.core.config import TinyModelConfig
    from mmed_helpers.core.tiny import build_tiny_model
    from mmed_helpers.steps.evaluate import load_benchmark, loglik_scores

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model or str(build_tiny_model(tmp / "tiny", TinyModelConfig()))
        items = load_benchmark("medqa", "bundled").items + [
            it for it in load_benchmark("mmedbench", "bundled", ["en", "zh", "ru", "es"]).items if not it.multi
        ]
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
                        "choices": list(it.letters),
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


if __name__ == "__main__":
    main()
