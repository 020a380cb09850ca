"""Quality checks for generated text: language identification, source support, exact and near duplicates.

* **Language**: ``py3langid`` (a naive-Bayes identifier over 97 languages whose model ships inside the package,
  so it works offline). Short CJK-only strings are ambiguous between Chinese and Japanese, so Japanese text is
  also accepted when it contains kana and Chinese when it contains none.
* **Support**: the share of an answer's content tokens that also occur in its source passage (words of three or
  more letters cut to their first five letters, a crude stemmer so that inflected forms such as "сладкий" /
  "сладкого" or "cause" / "caused" match; numbers, words with digits and two-capital abbreviations as they are;
  character bigrams for Chinese/Japanese; an answer with none of these scores 0). A cheap, documented proxy
  for "the answer comes from the text", not a fact check.
* **Duplicates**: exact duplicates after normalisation (Unicode NFKC, case-folded, punctuation and spacing
  removed) and near duplicates by MinHash over character 5-gram shingles with LSH banding, confirmed by the
  estimated Jaccard similarity.

    >>> detect_language("Quelle est la cause de la migraine ?")[0]
    'fr'
    >>> support_score("Iron deficiency causes anemia.", "In adults, iron deficiency causes anemia.")
    1.0
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_WITH_DIGIT = re.compile(r"(?<![\w.,])\w*\d(?:[\w]|[.,]\d)*", re.UNICODE)
_ABBREVIATION = re.compile(r"(?<!\w)[^\W\d_]{2}(?!\w)", re.UNICODE)
STEM = 5


# --------------------------------------------------------------------------- language


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """Most likely ISO 639-1 language of ``text`` and its probability (over 97 languages)."""
    lang, prob = _identifier().classify(text)
    return str(lang), float(prob)


def is_language(text: str, lang: str) -> bool:
    """True if ``text`` reads as ``lang``. Chinese vs Japanese is settled by the presence of kana."""
    if not text.strip():
        return False
    if lang in ("zh", "ja") and cjk_share(text) > 0.3:
        has_kana = bool(_KANA.search(text))
        return has_kana if lang == "ja" else not has_kana
    return detect_language(text)[0] == lang


def cjk_share(text: str) -> float:
    letters = [c for c in text if not c.isspace()]
    return sum(bool(_CJK.match(c)) for c in letters) / max(len(letters), 1)


def text_length(text: str) -> int:
    """Length in characters, counting each Chinese/Japanese character twice (it carries about a syllable or a
    word), so one pair of length limits serves all six languages."""
    return len(text) + len(_CJK.findall(text))


# --------------------------------------------------------------------------- support


def content_tokens(text: str) -> set[str]:
    """Case-folded words of >= 3 letters cut to 5 letters; numbers, words with digits ("B12", "HbA1c") and
    capitalised abbreviations of two letters ("MI", "IV") as they are (a decimal comma read as a point); and
    character bigrams of Chinese/Japanese runs."""
    text = unicodedata.normalize("NFKC", text)
    exact = {m.replace(",", ".").casefold() for m in _WITH_DIGIT.findall(text)}
    exact |= {m.casefold() for m in _ABBREVIATION.findall(text) if m.isupper()}
    text = text.casefold()
    tokens = {w[:STEM] for w in _WORD.findall(text) if not _CJK.search(w)} | exact
    for run in re.findall(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+", text):
        tokens.update(run[i : i + 2] for i in range(len(run) - 1))
    return tokens


def support_score(answer: str, source: str) -> float:
    """Share of the answer's content tokens found in ``source``; 0.0 when the answer has none, so that a
    claim with nothing to check does not pass (an answer like "5 mg" or "DKA" is checked on its number or
    abbreviation)."""
    ans = content_tokens(answer)
    if not ans:
        return 0.0
    return len(ans & content_tokens(source)) / len(ans)


# --------------------------------------------------------------------------- duplicates


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation and whitespace removed: the key for exact duplicates."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def shingles(text: str, k: int = 5) -> set[str]:
    norm = normalize(text)
    if len(norm) <= k:
        return {norm} if norm else set()
    return {norm[i : i + k] for i in range(len(norm) - k + 1)}


_PRIME = (1 << 31) - 1  # a < 2^31 and 32-bit hashes keep a*h + b inside uint64


class MinHasher:
    """MinHash signatures with ``num_perm`` universal hash functions (seeded: same text, same signature)."""

    def __init__(self, num_perm: int = 64, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, _PRIME, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, size=num_perm, dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray:
        items = shingles(text)
        if not items:
            return np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        h = np.array([zlib.crc32(s.encode("utf-8")) for s in items], dtype=np.uint64)
        return ((self.a[:, None] * h[None, :] + self.b[:, None]) % _PRIME).min(axis=1)


def jaccard(a: str, b: str) -> float:
    """Exact Jaccard similarity of two texts' shingle sets."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / max(len(sa | sb), 1)


def find_duplicates(
    texts: Sequence[str], threshold: float = 0.8, num_perm: int = 64, bands: int = 16
) -> dict[int, tuple[str, int]]:
    """Indices of texts that duplicate an earlier text: ``{index: ("exact" | "near", index_of_first)}``.

    Earlier texts win, so put the texts you trust most (hand-written seeds) first.
    """
    rows = num_perm // bands
    hasher = MinHasher(num_perm)
    first_exact: dict[str, int] = {}
    buckets: dict[tuple[int, bytes], list[int]] = {}
    sigs: dict[int, np.ndarray] = {}
    dups: dict[int, tuple[str, int]] = {}
    for i, text in enumerate(texts):
        key = normalize(text)
        if key in first_exact:
            dups[i] = ("exact", first_exact[key])
            continue
        first_exact[key] = i
        sig = hasher.signature(text)
        candidates: list[int] = []
        band_keys = [(b, sig[b * rows : (b + 1) * rows].tobytes()) for b in range(bands)]
        for bk in band_keys:
            candidates.extend(buckets.get(bk, []))
        match = next((j for j in dict.fromkeys(candidates) if float(np.mean(sigs[j] == sig)) >= threshold), None)
        if match is not None:
            dups[i] = ("near", match)
            continue
        sigs[i] = sig
        for bk in band_keys:
            buckets.setdefault(bk, []).append(i)
    return dups
