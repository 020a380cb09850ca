"""Translators and the translate -> back-translate -> score cycle."""

import dataclasses
import json

import pytest

from mmed_helpers.core.config import ConfigError, load_profile
from mmed_helpers.core.layout import RunLayout
from mmed_helpers.core.llm import Completion, LocalBackend
from mmed_helpers.core.records import IFTSample, MCItem, load_items
from mmed_helpers.core.tiny import build_tiny_seq2seq
from mmed_helpers.steps.ccts import CCTSScorer
from mmed_helpers.steps.translate import (
    LLMTranslator,
    Seq2SeqTranslator,
    TranslationError,
    make_translator,
    rebuild,
    run_expansion,
    sample_fields,
)

TEXTS = ["Aspirin inhibits platelet aggregation.", "Atrial fibrillation raises the risk of stroke.", "Hi"]


@pytest.fixture(scope="module")
def seq2seq_dir(tmp_path_factory):
    return build_tiny_seq2seq(tmp_path_factory.mktemp("s2s") / "nllb-tiny")


def test_llm_translator_prompt_and_output(tiny_dir):
    tr = LLMTranslator(LocalBackend(tiny_dir, batch_size=2), max_new_tokens=6)
    msgs = tr.messages("Aspirin.", "en", "ja")
    assert msgs[0]["role"] == "system" and "from English into Japanese" in msgs[1]["content"]
    assert msgs[1]["content"].endswith("Aspirin.")
    out = tr.translate(TEXTS, "en", "fr")
    assert len(out) == 3 and all(isinstance(c, Completion) and c.text for c in out)
    assert tr.describe()["translator"] == "llm"


def test_seq2seq_translator_nllb_style(seq2seq_dir):
    tr = Seq2SeqTranslator(seq2seq_dir, style="nllb", batch_size=2, max_new_tokens=6)
    out = tr.translate(TEXTS, "en", "fr")
    assert len(out) == 3 and all(c.error is None for c in out)
    one_by_one = Seq2SeqTranslator(seq2seq_dir, style="nllb", batch_size=1, max_new_tokens=6).translate(
        TEXTS, "en", "fr"
    )
    assert [c.text for c in out] == [c.text for c in one_by_one]
    # the target code is forced as the first generated token
    tok, model = tr._load(str(seq2seq_dir))
    enc = tok(["eng_Latn " + TEXTS[0]], return_tensors="pt")
    gen = model.generate(**enc, forced_bos_token_id=tok.convert_tokens_to_ids("jpn_Jpan"), max_new_tokens=3)
    assert tok.convert_ids_to_tokens(int(gen[0, 1])) == "jpn_Jpan"
    with pytest.raises(TranslationError, match="no nllb language code for 'de'"):
        tr.translate(TEXTS, "en", "de")


def test_seq2seq_marian_style_loads_one_model_per_pair(seq2seq_dir, tmp_path):
    for pair in ("en-fr", "fr-en"):
        (tmp_path / f"opus-{pair}").symlink_to(seq2seq_dir, target_is_directory=True)
    tr = Seq2SeqTranslator(str(tmp_path / "opus-{src}-{tgt}"), style="marian", max_new_tokens=4)
    assert len(tr.translate(TEXTS[:1], "en", "fr")) == 1 and len(tr.translate(TEXTS[:1], "fr", "en")) == 1
    assert sorted(tr._loaded) == [str(tmp_path / "opus-en-fr"), str(tmp_path / "opus-fr-en")]
    with pytest.raises(TranslationError, match="needs a pattern with"):
        Seq2SeqTranslator("Helsinki-NLP/opus-mt-en-fr", style="marian")
    with pytest.raises(TranslationError, match="style must be one of"):
        Seq2SeqTranslator(seq2seq_dir, style="google")


def test_make_translator_follows_the_profile(tiny_dir, seq2seq_dir):
    assert isinstance(make_translator(load_profile("smoke"), tiny_dir), LLMTranslator)
    cfg = load_profile("smoke", {"ccts.translator": "seq2seq", "ccts.translator_model": str(seq2seq_dir)})
    assert isinstance(make_translator(cfg, tiny_dir), Seq2SeqTranslator)
    with pytest.raises(ConfigError, match="'ccts.translator_model' in override of profile 'smoke' is empty"):
        load_profile("smoke", {"ccts.translator": "seq2seq"})  # the profile refuses it first
    unset = dataclasses.replace(cfg, ccts=dataclasses.replace(cfg.ccts, translator_model=""))  # built in code
    with pytest.raises(TranslationError, match="translator_model is empty"):
        make_translator(unset, tiny_dir)


def test_fields_and_rebuild_keep_the_structure():
    mc = MCItem("m1", "en", "Q?", ["a", "b", "c", "d", "e"], "C", "R.")
    fields = sample_fields(mc)
    assert list(fields) == ["question", "option_A", "option_B", "option_C", "option_D", "option_E", "rationale"]
    fr = rebuild(mc, {k: v.upper() for k, v in fields.items()}, "fr")
    assert (fr.id, fr.lang, fr.answer, fr.options, fr.source_id, fr.origin) == (
        "m1|fr",
        "fr",
        "C",
        ["A", "B", "C", "D", "E"],
        "m1",
        "translated",
    )


class TaggingTranslator:
    """A reversible test translator: forward adds a target tag, backward removes it; for ``lossy`` targets the
    back-translation keeps only the first half of its words (a truncated round trip). The cycle, the scorer and the
    filter under test are the real ones."""

    def __init__(self, lossy=(), failing=()):
        self.lossy, self.failing, self.calls = set(lossy), set(failing), 0

    def describe(self):
        return {"translator": "tagging-test"}

    def translate(self, texts, src, tgt):
        self.calls += len(texts)
        out = []
        for t in texts:
            if tgt in self.failing:
                out.append(Completion("", error="HTTP 503"))
            elif src == "en":
                out.append(Completion(f"[{tgt}] {t}"))
            else:
                back = t.split("] ", 1)[1]
                words = back.split()
                out.append(Completion(" ".join(words[: max(1, len(words) // 2)]) if src in self.lossy else back))
        return out


def _items():
    ift = [
        IFTSample(
            f"i{k}",
            "en",
            f"What does drug {k} treat in adults?",
            f"Drug {k} treats chronic heart failure with reduced ejection fraction in adults.",
        )
        for k in range(3)
    ]
    ift.append(IFTSample("z0", "zh", "问题？", "答案。"))  # not English: not a source
    mc = [
        MCItem(
            "m0",
            "en",
            "Which vessel is occluded in an inferior infarction?",
            ["Right coronary artery", "Left anterior descending", "Circumflex", "Left main"],
            "A",
            "Inferior ST elevation usually reflects right coronary artery occlusion.",
        )
    ]
    return {"ift": ift, "mc": mc}


def test_cycle_scores_filters_and_resumes(tmp_path):
    # the tagging translator leaves the text in English, so the target-language check is off here (tested below)
    cfg = load_profile(
        "smoke", {"languages": ["en", "fr", "ja"], "ccts.max_source_samples": 2, "ccts.check_target_language": False}
    )
    scorer = CCTSScorer(batch_size=8)
    tr = TaggingTranslator(lossy={"ja"})
    run = RunLayout(tmp_path)
    result = run_expansion(cfg, run, tr, scorer, _items(), progress=False)
    rows = {r["id"]: r for r in result.rows()}
    assert len(rows) == (2 + 1) * 2  # 2 IFT + 1 MC sources (max 2 per dataset) x 2 targets
    assert tr.calls == 2 * (2 * 2 + 6) * 2  # fields x targets, forward and back
    assert rows["i0|fr"]["ccts"] == pytest.approx(1.0, abs=1e-4) and rows["i0|fr"]["kept"]
    assert rows["i0|ja"]["ccts"] < 0.8 and rows["i0|ja"]["reason"] in ("below_threshold", "meaning_changed")
    assert all(r["reason"] in ("kept", "below_threshold", "meaning_changed") for r in rows.values())
    assert {r["id"] for r in rows.values() if r["kept"]} == {"i0|fr", "i1|fr", "m0|fr"}
    kept_mc = result.kept["mc"][0]
    assert kept_mc.lang == "fr" and kept_mc.options[0] == "[fr] Right coronary artery" and kept_mc.answer == "A"

    saved = load_items(run.mc_translated, "mc")
    assert [it.id for it in saved] == ["m0|fr"] and saved[0].origin == "translated"
    assert len([json.loads(x) for x in run.ccts_scores.read_text().splitlines()]) == 6

    # threshold 0 without the meaning guard keeps the lossy pairs too, without translating again
    lower = load_profile(
        "smoke",
        {
            "languages": ["en", "fr", "ja"],
            "ccts.max_source_samples": 2,
            "ccts.threshold": 0.0,
            "ccts.meaning_guard": False,
            "ccts.check_target_language": False,
        },
    )
    again = run_expansion(lower, run, TaggingTranslator(lossy={"ja"}), scorer, _items(), progress=False)
    assert again.translated_now == 0
    # a translator that describes itself differently made other translations: refused, named
    from mmed_helpers.core.jobs import StoreMismatch

    class Other(TaggingTranslator):
        def describe(self):
            return {**super().describe(), "model": "another-model"}

    with pytest.raises(StoreMismatch, match=r"made with a different translator: restore the translator's settings"):
        run_expansion(lower, run, Other(lossy={"ja"}), scorer, _items(), progress=False)
    assert sum(p.kept for p in again.pairs) == 6
    assert len(load_items(run.ift_translated, "ift")) == 4


def test_untranslated_copies_are_caught_by_the_target_language_check(tmp_path):
    """A translator that returns its input makes a perfect round trip (CCTS 1.0); only the language check
    stops it. A real French translation passes."""

    class Copier(TaggingTranslator):
        def translate(self, texts, src, tgt):
            self.calls += len(texts)
            return [Completion(FRENCH.get(t, t) if tgt == "fr" else (ENGLISH.get(t, t))) for t in texts]

    cfg = load_profile("smoke", {"languages": ["en", "fr", "es"], "ccts.max_source_samples": 1})
    item = IFTSample(
        "s0",
        "en",
        "What is the first-line treatment of anaphylaxis?",
        "Intramuscular adrenaline is the first-line treatment of anaphylaxis.",
    )
    result = run_expansion(cfg, RunLayout(tmp_path), Copier(), CCTSScorer(), {"ift": [item]}, progress=False)
    rows = {r["id"]: r for r in result.rows()}
    assert rows["s0|es"]["ccts"] == pytest.approx(1.0, abs=1e-4)  # copied: a perfect round trip (calibrated: 0.99994)
    assert rows["s0|es"]["reason"] == "wrong_target_language" and not rows["s0|es"]["kept"]
    assert rows["s0|fr"]["reason"] == "kept" and rows["s0|fr"]["ccts"] == pytest.approx(1.0, abs=1e-4)


Q_EN = "What is the first-line treatment of anaphylaxis?"
A_EN = "Intramuscular adrenaline is the first-line treatment of anaphylaxis."
FRENCH = {
    Q_EN: "Quel est le traitement de première intention de l'anaphylaxie ?",
    A_EN: "L'adrénaline intramusculaire est le traitement de première intention de l'anaphylaxie.",
}
ENGLISH = {v: k for k, v in FRENCH.items()}


def test_translations_that_copy_a_benchmark_item_are_removed_by_translation_or_back_translation(tmp_path):
    """A translation that reproduces a bundled MMedBench French question, and a round trip whose back-translation
    reproduces a bundled MedQA question, both pass CCTS (threshold 0) and are removed as ``benchmark_overlap``,
    counted per benchmark; an ordinary pair is kept."""
    from mmed_helpers.steps.benchmarks import decontamination_index, load_profile_benchmarks

    cfg = load_profile(
        "smoke",
        {
            "languages": ["en", "fr"],
            "ccts.threshold": 0.0,
            "ccts.meaning_guard": False,
            "ccts.check_target_language": False,
        },
    )
    bench = load_profile_benchmarks(cfg.evaluation, cfg.languages, True)[0]
    fr_q = next(it for it in bench if it.benchmark == "mmedbench" and it.lang == "fr")
    medqa = next(it for it in bench if it.benchmark == "medqa")
    items = [
        IFTSample("s0", "en", "Source question zero about a patient?", "Source answer zero for that patient."),
        IFTSample("s1", "en", "Source question one about a patient?", "Source answer one for that patient."),
        IFTSample("s2", "en", Q_EN, A_EN),
    ]
    forward = {items[0].question: fr_q.question, **FRENCH}
    backward = {f"[fr] {items[1].question}": medqa.question, **ENGLISH}

    class Mapping(TaggingTranslator):
        def translate(self, texts, src, tgt):
            table = forward if tgt == "fr" else backward
            return [
                Completion(table.get(t, f"[fr] {t}" if tgt == "fr" else ENGLISH.get(t, t.removeprefix("[fr] "))))
                for t in texts
            ]

    backward[fr_q.question] = items[0].question
    result = run_expansion(
        cfg,
        RunLayout(tmp_path),
        Mapping(),
        CCTSScorer(),
        {"ift": items},
        progress=False,
        benchmarks=decontamination_index(cfg),
    )
    rows = {r["id"]: r for r in result.rows()}
    assert {k: r["reason"] for k, r in rows.items()} == {
        "s0|fr": "benchmark_overlap",
        "s1|fr": "benchmark_overlap",
        "s2|fr": "kept",
    }
    assert rows["s0|fr"]["detail"] == f"mmedbench:{fr_q.id}" and rows["s1|fr"]["detail"] == f"medqa:{medqa.id}"
    report = result.contamination.to_dict()
    assert report["removed"] == {"medqa": 1, "mmedbench": 1}
    assert [e["id"] for e in report["examples"]] == ["s0|fr", "s1|fr"]
    assert [it.id for it in load_items(RunLayout(tmp_path).ift_translated, "ift")] == ["s2|fr"]


def test_failed_translations_are_counted_and_retried(tmp_path):
    cfg = load_profile(
        "smoke", {"languages": ["en", "fr", "ja"], "ccts.max_source_samples": 1, "ccts.check_target_language": False}
    )
    result = run_expansion(
        cfg, RunLayout(tmp_path), TaggingTranslator(failing={"ja"}), CCTSScorer(), _items(), progress=False
    )
    reasons = {r["id"]: r["reason"] for r in result.rows()}
    assert reasons == {"i0|fr": "kept", "i0|ja": "translation_failed", "m0|fr": "kept", "m0|ja": "translation_failed"}
    retry = TaggingTranslator()
    again = run_expansion(cfg, RunLayout(tmp_path), retry, CCTSScorer(), _items(), progress=False)
    assert retry.calls == again.translated_now == (2 + 6) * 2  # only the failed ja fields, forward and back
    assert all(p.kept for p in again.pairs)


def test_language_names_cover_the_course():
    from mmed_helpers.core.languages import TABLE

    assert set(TABLE) == {"en", "zh", "ja", "fr", "ru", "es"} and all(row.name for row in TABLE.values())


# --------------------------------------------------------------------------- the real MT tokenizer classes


@pytest.fixture(scope="module")
def real_mt_dirs(tmp_path_factory):
    from mmed_helpers.core.tiny import build_tiny_mt

    return {style: build_tiny_mt(tmp_path_factory.mktemp("mt") / style, style) for style in ("nllb", "m2m")}


@pytest.mark.parametrize("style", ["nllb", "m2m"])
def test_translation_through_the_real_tokenizer_classes(real_mt_dirs, style):
    """NllbTokenizer(Fast) and M2M100Tokenizer, built from a locally trained sentencepiece model: the source code
    is where the real class puts it, the target code is the first generated token, forward and back."""
    from transformers import M2M100Tokenizer, NllbTokenizer, NllbTokenizerFast

    from mmed_helpers.core.languages import TABLE

    path = real_mt_dirs[style]
    tr = Seq2SeqTranslator(path, style=style, batch_size=2, max_new_tokens=5)
    for src, tgt in (("en", "ru"), ("ru", "en"), ("en", "zh"), ("ja", "en")):
        tok, model, inputs, kwargs = tr.prepare(TEXTS[:2], src, tgt)
        if style == "nllb":
            assert isinstance(tok, NllbTokenizer) and NllbTokenizerFast is NllbTokenizer  # one class in v5
            src_tok, tgt_tok = TABLE[src].nllb, TABLE[tgt].nllb
        else:
            assert isinstance(tok, M2M100Tokenizer) and tok.src_lang == TABLE[src].m2m == src
            src_tok, tgt_tok = TABLE[src].m2m_token, TABLE[tgt].m2m_token
            assert tok.get_lang_id(src) == tok.convert_tokens_to_ids(src_tok)
        ids = tok(inputs[0]).input_ids
        assert tok.convert_ids_to_tokens(ids[0]) == src_tok and ids[-1] == tok.eos_token_id  # [src] text </s>
        assert kwargs["forced_bos_token_id"] == tok.convert_tokens_to_ids(tgt_tok) != tok.unk_token_id
        enc = tok(inputs, return_tensors="pt", padding=True)
        gen = model.generate(**enc, max_new_tokens=3, do_sample=False, **kwargs)
        assert tok.convert_ids_to_tokens(int(gen[0, 1])) == tgt_tok  # after the decoder start token
        out = tr.translate(TEXTS, src, tgt)
        assert len(out) == 3 and all(c.error is None for c in out)
        codes = {row.nllb for row in TABLE.values()} | {row.m2m_token for row in TABLE.values()}
        assert not any(code in c.text for c in out for code in codes)  # no language token left in the text
    with pytest.raises(TranslationError, match=f"no {style} language code for 'xx'"):
        tr.translate(TEXTS, "en", "xx")


def test_the_old_m2m_token_is_what_the_real_class_refuses(real_mt_dirs):
    """The regression behind the M2M fix: ``M2M100Tokenizer`` wants ``en``, not ``__en__``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_mt_dirs["m2m"])
    with pytest.raises(KeyError):
        tok.src_lang = "__en__"
