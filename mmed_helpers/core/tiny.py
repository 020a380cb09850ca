"""The embedded smoke model: a tiny Llama-architecture causal LM and a tokenizer trained here, offline.

The tokenizer is a byte-level BPE trained on the bundled six-language corpus, so every string encodes (bytes are
the fallback) and Latin, CJK, kana and Cyrillic text gets learned merges. It carries a Llama-3-style chat
template. The model starts from random weights drawn from a fixed seed; with ``pretrain_steps`` (the smoke
profile) it is then pre-trained here as a causal LM on the bundled passages, so it has seen medical text in all
six languages - about 60 passages, a few tens of thousands of tokens: it knows how the course's text looks,
not medicine. The random build (the default config) is what the unit tests use.

Same configuration and seed give the same bytes on disk::

    >>> from mmed_helpers.core.config import TinyModelConfig
    >>> from mmed_helpers.core.tiny import build_tiny_model
    >>> path = build_tiny_model("/tmp/tiny-llama", TinyModelConfig())   # well under a second
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .artifacts import atomic_directory
from .config import TinyModelConfig
from .corpus import load_corpus
from .flags import cache_dir
from .languages import TABLE
from .llm import chat_token_ids

BOS, EOS_TEXT, START_HEADER, END_HEADER, EOT, PAD = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|pad|>",
)
SPECIAL_TOKENS = [BOS, EOS_TEXT, START_HEADER, END_HEADER, EOT, PAD]

# Llama-3 style. The {% generation %} block marks assistant tokens, so trainers can put the loss on them only.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] | trim }}{{ '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

MARKER_FILE = "mmed_tiny.json"
"""Written last into a built model directory: the recipe it was built from (used to reuse a build)."""


FORMAT_LINE_REPEATS = 8
"""How often each of the course's fixed format lines is added to the tokenizer's text (so BPE learns them)."""


def format_lines() -> list[str]:
    """The fixed words of MC items and their answers, per language: the instructions and the answer and rationale
    labels (``languages.TABLE``), one line ``Answer: B.`` then ``Rationale:``. A real tokenizer has such common words as
    single tokens; learned from the passages alone, the tiny one would spell them letter by letter (``Answer`` as
    five tokens, ``Respuesta`` as six), and a reply would spend its whole budget on the label. Stage 2's targets
    leave the rationale label out (:func:`~mmed_helpers.core.mcformat.mc_target`); these lines keep it, as the
    base they pre-train parsed best after stage 2 (91-99 % of replies over four seeds, against 0-86 % for a base
    pre-trained on the answer lines alone)."""
    from .mcformat import LETTERS, ask

    lines = []
    for code in TABLE:
        row = TABLE[code]
        lines += [ask(code, False), ask(code, True)]
        lines += [f"{row.answer_label}: {x}. \n{row.rationale_label}: " for x in LETTERS[:5]]
    return lines


def tokenizer_training_text() -> list[str]:
    """The lines the tokenizer learns from: titles and paragraphs of the bundled corpus, all languages, and the
    course's format lines (:func:`format_lines`, repeated)."""
    lines: list[str] = []
    for p in load_corpus():
        lines.append(p.title)
        lines.extend(p.paragraphs)
    return lines + format_lines() * FORMAT_LINE_REPEATS


def recipe(cfg: TinyModelConfig) -> dict:
    """What determines the built bytes: the shape, the seed and the training text's hash."""
    text_hash = hashlib.sha256("\n".join(tokenizer_training_text()).encode("utf-8")).hexdigest()
    return {"format": 3, "config": _cfg_dict(cfg), "corpus_sha256": text_hash}


def train_tokenizer(cfg: TinyModelConfig, lines: list[str] | None = None):
    """Train the byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast`` with a chat template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = tokenizer_training_text() if lines is None else lines
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Like Llama 3: plain encoding starts with BOS; chat rendering adds its own BOS and encodes without specials.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        additional_special_tokens=[EOS_TEXT, START_HEADER, END_HEADER],
        chat_template=CHAT_TEMPLATE,
        model_max_length=cfg.max_position_embeddings,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir: str | Path, cfg: TinyModelConfig | None = None, overwrite: bool = False, progress: bool = True
) -> Path:
    """Build the tiny model + tokenizer into ``out_dir`` (absolute path returned).

    An existing directory built from the same recipe is reused as it is; a different or unfinished one is
    rebuilt when ``overwrite`` is true and refused otherwise. The directory appears atomically (built in a
    sibling temporary folder, then renamed), so an interrupted build never leaves a half-written model behind.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = cfg or TinyModelConfig()
    out = Path(out_dir).expanduser().resolve()
    want = recipe(cfg)
    if _reusable(out, want, overwrite, "tiny model"):
        return out
    tokenizer = train_tokenizer(cfg)
    model_cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=cfg.tie_word_embeddings,
        dtype="float32",
    )
    model = _seeded_model(LlamaForCausalLM, model_cfg, tokenizer, cfg.seed, do_sample=False)
    extra = {}
    if cfg.pretrain_steps > 0:
        log = pretrain(model, tokenizer, cfg, progress=progress)
        extra[PRETRAINING_FILE] = json.dumps(log, indent=1) + "\n"
    return _save(out, model, tokenizer, want, extra)


PRETRAINING_FILE = "pretraining.json"
"""In a pre-trained tiny model's directory: the pre-training log (steps, losses, tokens, seconds)."""


def pretraining_stream(tokenizer) -> list[int]:
    """The pre-training text as one token stream: every bundled passage (title, blank line, text); each of its
    paragraphs once more as a chat exchange (:data:`CHAT_TEMPLATE`: the title as the user turn, the paragraph as
    the assistant's); then the course's format lines (:func:`format_lines`, repeated as for the tokenizer).
    Plain pieces are opened by BOS and closed by ``<|end_of_text|>``.

    The chat exchanges and the format lines are there for what a LoRA adapter cannot learn: it cannot train an
    embedding, and a real (instruct) base has seen its own header tokens and words like "Answer" or "Respuesta"
    countless times. Without them the tiny base met ``<|start_header_id|>assistant<|end_header_id|>`` first in
    stage 1, with random embeddings, and after 100 stage-2 steps still could not tell at the answer's first token
    which language the question was in (p("Answer") = 0.07 on a training item). The exchanges teach only that an
    assistant turn continues in the user's language; the format lines appear as loose lines, never after a
    question, so the base does not learn to answer with them: stage 2 teaches that."""
    eos = tokenizer.convert_tokens_to_ids(EOS_TEXT)
    ids: list[int] = []
    passages = load_corpus()
    for p in passages:
        ids += tokenizer(p.title + "\n\n" + p.text)["input_ids"] + [eos]  # the tokenizer adds BOS
    for p in passages:
        for paragraph in p.paragraphs:
            chat = [{"role": "user", "content": p.title}, {"role": "assistant", "content": paragraph}]
            ids += chat_token_ids(tokenizer, chat)
    for line in format_lines() * FORMAT_LINE_REPEATS:
        ids += tokenizer(line)["input_ids"] + [eos]
    return ids


def pretrain(model, tokenizer, cfg: TinyModelConfig, progress: bool = True) -> dict:
    """Pre-train ``model`` in place as a causal LM on the bundled passages: ``cfg.pretrain_steps`` AdamW steps
    on random windows of ``pretrain_seq_length`` tokens, drawn from a generator seeded with ``cfg.seed`` (the
    same config gives the same model on one machine). Returns the log: loss every 10 steps, tokens, seconds."""
    import math
    import time

    import torch
    from tqdm.auto import tqdm

    stream = torch.tensor(pretraining_stream(tokenizer))
    seq = cfg.pretrain_seq_length
    starts = len(stream) - seq
    if starts <= 0:
        raise ValueError(f"the pre-training text ({len(stream)} tokens) is shorter than one window ({seq})")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    warmup, steps = min(20, cfg.pretrain_steps), cfg.pretrain_steps

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        bar = tqdm(range(steps), desc="pre-training the tiny model", disable=not progress, leave=False)
        for step in bar:
            offsets = torch.randint(0, starts, (cfg.pretrain_batch_size,), generator=gen)
            batch = torch.stack([stream[o : o + seq] for o in offsets.tolist()])
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if step % 10 == 0 or step == steps - 1:
                losses.append((step + 1, round(float(loss), 4)))
                bar.set_postfix(loss=f"{float(loss):.3f}")
    model.eval()
    return {
        "steps": steps,
        "losses": losses,
        "corpus_tokens": len(stream),
        "trained_tokens": steps * cfg.pretrain_batch_size * seq,
        "epochs": round(steps * cfg.pretrain_batch_size * seq / len(stream), 2),
        "seconds": round(time.perf_counter() - t0, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def pretraining_log(model_dir: str | Path) -> dict | None:
    """The pre-training log of a tiny model directory (None for a random-weight build or another model)."""
    f = Path(model_dir) / PRETRAINING_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def build_tiny_model_cached(
    out_dir: str | Path, cfg: TinyModelConfig | None = None, overwrite: bool = False, progress: bool = True
) -> Path:
    """:func:`build_tiny_model` through a cache keyed by the recipe's hash (``MMED_CACHE_DIR``/tiny/<hash>):
    a pre-trained build is made once per machine and copied into ``out_dir``. Random builds are not cached
    (they take well under a second)."""
    import shutil

    cfg = cfg or TinyModelConfig()
    out = Path(out_dir).expanduser().resolve()
    want = recipe(cfg)
    if cfg.pretrain_steps <= 0 or _reusable(out, want, overwrite, "tiny model"):
        return build_tiny_model(out, cfg, overwrite, progress)
    key = hashlib.sha256(json.dumps(want, sort_keys=True).encode()).hexdigest()[:16]
    cached = build_tiny_model(cache_dir() / "tiny" / key, cfg, overwrite=True, progress=progress)
    with atomic_directory(out) as tmp:
        shutil.copytree(cached, tmp, dirs_exist_ok=True)
    return out


def _reusable(out: Path, want: dict, overwrite: bool, what: str) -> bool:
    """True if ``out`` is a finished build of recipe ``want``; refuse any other existing folder unless
    ``overwrite`` (the caller then rebuilds it)."""
    if not out.exists():
        return False
    if is_tiny_model_dir(out) and json.loads((out / MARKER_FILE).read_text()) == want:
        return True
    if not overwrite:
        raise FileExistsError(
            f"{out} exists but is not a {what} built from this configuration; delete it or pass overwrite=True"
        )
    return False


def _seeded_model(model_cls, model_cfg, tokenizer, seed: int, **generation):
    """``model_cls(model_cfg)`` in float32 with weights drawn from ``seed`` (the global RNG is left untouched),
    and a generation config carrying the tokenizer's special ids."""
    import torch
    from transformers import GenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(model_cfg).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **generation,
    )
    return model


def _save(out: Path, model, tokenizer, recipe_record: dict, extra: dict[str, str] | None = None) -> Path:
    """Save model, tokenizer, ``extra`` files and the recipe marker (written last) atomically into ``out``."""
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / MARKER_FILE).write_text(json.dumps(recipe_record, indent=2, sort_keys=True) + "\n")
    return out


def is_tiny_model_dir(path: str | Path) -> bool:
    """True if ``path`` holds a finished tiny-model build."""
    p = Path(path)
    return (p / MARKER_FILE).is_file() and (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def _cfg_dict(cfg: TinyModelConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)


def build_tiny_seq2seq(out_dir: str | Path, cfg: TinyModelConfig | None = None, overwrite: bool = False) -> Path:
    """A tiny NLLB-style translation model (M2M-100 architecture, random weights) with the course tokenizer
    plus NLLB language-code tokens, built offline. It exercises the seq2seq translator path; its output is
    noise. Same configuration and seed give the same bytes."""

    cfg = cfg or TinyModelConfig()
    out = Path(out_dir).expanduser().resolve()
    want = {**recipe(cfg), "kind": "seq2seq-nllb"}
    if _reusable(out, want, overwrite, "tiny seq2seq model"):
        return out
    tokenizer = train_tokenizer(cfg)
    tokenizer.add_special_tokens({"additional_special_tokens": [row.nllb for row in TABLE.values()]})
    tokenizer.eos_token = EOS_TEXT
    return _save_m2m(out, cfg, tokenizer, len(tokenizer), want)


MT_STYLES = ("nllb", "m2m")


def train_sentencepiece(cfg: TinyModelConfig, lines: list[str] | None = None) -> bytes:
    """A sentencepiece BPE model trained on the bundled corpus (all six languages, every character kept), with
    the fairseq special ids the NLLB and M2M-100 tokenizers expect: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2,
    ``<unk>`` 3. Returns the serialised model."""
    import io

    import sentencepiece as spm

    lines = tokenizer_training_text() if lines is None else lines
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=min(cfg.vocab_size, 2000),
        model_type="bpe",
        character_coverage=1.0,
        hard_vocab_limit=False,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        num_threads=1,
        minloglevel=2,
    )
    return buf.getvalue()


def real_mt_tokenizer(style: str, spm_model: bytes, work_dir: Path):
    """The real tokenizer class of an MT model family, built from ``spm_model``: ``NllbTokenizer`` (the fast,
    tokenizers-backed class; ``NllbTokenizerFast`` is the same class in transformers 5) for ``nllb``,
    ``M2M100Tokenizer`` (sentencepiece + ``vocab.json``) for ``m2m``. Both add their own language codes
    (``eng_Latn`` ...; ``__en__`` ... addressed as ``en``)."""
    if style not in MT_STYLES:
        raise ValueError(f"tiny MT style must be one of {MT_STYLES}, got {style!r}")
    import sentencepiece as spm

    work_dir.mkdir(parents=True, exist_ok=True)
    model_file = work_dir / "sentencepiece.bpe.model"
    model_file.write_bytes(spm_model)
    if style == "nllb":
        from tokenizers.models import BPE
        from transformers import NllbTokenizer
        from transformers.convert_slow_tokenizer import SentencePieceExtractor

        parts = SentencePieceExtractor(str(model_file)).extract(BPE)
        return NllbTokenizer(
            vocab=parts["vocab"],
            merges=parts["merges"],
            _spm_precompiled_charsmap=parts.get("_spm_precompiled_charsmap"),
            src_lang=TABLE["en"].nllb,
            tgt_lang=TABLE["fr"].nllb,
        )
    from transformers import M2M100Tokenizer

    sp = spm.SentencePieceProcessor(model_proto=spm_model)
    vocab_file = work_dir / "vocab.json"
    vocab_file.write_text(json.dumps({sp.id_to_piece(i): i for i in range(sp.get_piece_size())}, ensure_ascii=False))
    return M2M100Tokenizer(str(vocab_file), str(model_file), src_lang=TABLE["en"].m2m, tgt_lang=TABLE["fr"].m2m)


def build_tiny_mt(
    out_dir: str | Path, style: str = "nllb", cfg: TinyModelConfig | None = None, overwrite: bool = False
) -> Path:
    """A tiny translation model of a real family, built offline: the family's own tokenizer class
    (:func:`real_mt_tokenizer`, from a sentencepiece model trained on the bundled corpus) and a tiny
    ``M2M100ForConditionalGeneration`` (the architecture of both NLLB-200 and M2M-100) with random weights. It
    exercises the seq2seq translator with the real language-code handling; its output is noise."""
    import tempfile

    cfg = cfg or TinyModelConfig()
    out = Path(out_dir).expanduser().resolve()
    want = {**recipe(cfg), "kind": f"seq2seq-{style}-real-tokenizer"}
    if _reusable(out, want, overwrite, f"tiny {style} model"):
        return out
    with tempfile.TemporaryDirectory() as work:
        tokenizer = real_mt_tokenizer(style, train_sentencepiece(cfg), Path(work))
    # M2M100Tokenizer numbers its language tokens after the pieces and made-up words: cover every id it makes
    lang_ids = list(getattr(tokenizer, "lang_token_to_id", {}).values())
    vocab_size = max(len(tokenizer), max(lang_ids, default=0) + 1 + getattr(tokenizer, "num_madeup_words", 0))
    return _save_m2m(out, cfg, tokenizer, vocab_size, want)


def _save_m2m(out: Path, cfg: TinyModelConfig, tokenizer, vocab_size: int, want: dict) -> Path:
    """A one-layer M2M-100 encoder-decoder of the tiny shape with seeded random weights, saved with ``tokenizer``."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    model_cfg = M2M100Config(
        vocab_size=vocab_size,
        d_model=cfg.hidden_size,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=cfg.num_attention_heads,
        decoder_attention_heads=cfg.num_attention_heads,
        encoder_ffn_dim=cfg.intermediate_size,
        decoder_ffn_dim=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        scale_embedding=True,
    )
    model = _seeded_model(
        M2M100ForConditionalGeneration, model_cfg, tokenizer, cfg.seed, decoder_start_token_id=tokenizer.eos_token_id
    )
    return _save(out, model, tokenizer, want)
