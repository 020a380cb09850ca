"""Text generation backends behind one small interface.

* :class:`LocalBackend` - a local ``transformers`` causal LM, batched (left padding, the tokenizer's chat
  template, configurable sampling);
* :class:`OpenAIBackend` - any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp server,
  TGI): bounded concurrency, timeouts, retries with backoff on 429/5xx, a clear error on 401/403/404.

Both take conversations (lists of ``{"role", "content"}`` messages) and return one :class:`Completion` per
conversation, in order. A per-item failure (a malformed response, retries exhausted) comes back as a
``Completion`` with ``error`` set, so a long run counts it instead of crashing; a failure that dooms every
request (bad key, wrong URL or model, server down) raises :class:`EndpointError` with one clear line::

    >>> backend = LocalBackend("/tmp/run/models/base", batch_size=8)
    >>> out = backend.generate([[{"role": "user", "content": "What is anemia?"}]], GenerationParams(max_new_tokens=32))
    >>> out[0].text  # the tiny smoke model writes noise
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .config import DATAGEN_BACKENDS
from .device import default_device, resolve_dtype

Messages = list[dict[str, str]]


def chat_token_ids(tokenizer, messages: Messages, add_generation_prompt: bool = False) -> list[int]:
    """``messages`` through the tokenizer's chat template, as a list of token ids (transformers returns a list
    or, in newer versions, a ``BatchEncoding``)."""
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


@dataclass
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    """0 = greedy decoding."""
    top_p: float = 0.9
    seed: int | None = None


@dataclass
class Completion:
    text: str
    error: str | None = None
    """Set when this one request failed (the text is then empty)."""
    completion_tokens: int = 0


class EndpointError(RuntimeError):
    """The endpoint cannot serve any request (bad key, wrong URL/model, unreachable): stop and fix."""


class Backend(Protocol):
    name: str

    def describe(self) -> dict[str, object]: ...

    def generate(self, conversations: list[Messages], params: GenerationParams) -> list[Completion]: ...


# --------------------------------------------------------------------------- local transformers model


class LocalBackend:
    """A local causal LM with batched generation. ``model`` is a directory (or hub id when online)."""

    name = "local"

    def __init__(self, model: str | Path, batch_size: int = 8, dtype: str = "auto", device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name = str(model)
        self.batch_size = max(1, int(batch_size))
        self.device = device or default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = resolve_dtype(dtype, self.device)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_name, dtype=torch_dtype).to(self.device).eval()

    @classmethod
    def from_loaded(cls, model, tokenizer, batch_size: int = 8, name: str = "loaded") -> LocalBackend:
        """Wrap a model and tokenizer that are already in memory (e.g. base + adapter for evaluation)."""
        self = cls.__new__(cls)
        self.model_name, self.batch_size, self.model, self.tokenizer = name, max(1, batch_size), model, tokenizer
        self.device = str(next(model.parameters()).device)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return self

    def describe(self) -> dict[str, object]:
        return {"backend": self.name, "model": self.model_name, "device": self.device, "batch_size": self.batch_size}

    def generate(self, conversations: list[Messages], params: GenerationParams) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(conversations), self.batch_size):
            out.extend(self._batch(conversations[start : start + self.batch_size], params, start))
        return out

    def _batch(self, conversations: list[Messages], params: GenerationParams, offset: int) -> list[Completion]:
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = params.temperature > 0
        kwargs = {"do_sample": sample, "max_new_tokens": params.max_new_tokens}
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
            if params.seed is not None:
                torch.manual_seed(params.seed + offset)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            generated = self.model.generate(
                **enc, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id, **kwargs
            )
        new = generated[:, enc["input_ids"].shape[1] :]
        results = []
        for row in new:
            ids = [int(t) for t in row if int(t) != self.tokenizer.pad_token_id]
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            results.append(Completion(text=text, completion_tokens=len(ids)))
        return results


# --------------------------------------------------------------------------- OpenAI-compatible endpoint


class OpenAIBackend:
    """Chat completions from any OpenAI-compatible server. The API key is read from ``api_key_env``.

    ``base_url`` is the API root, e.g. ``http://localhost:8000/v1`` (vLLM) or ``http://localhost:11434/v1``
    (Ollama). The key never appears in errors, logs or :meth:`describe`.
    """

    name = "openai"
    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
    ):
        if not base_url:
            raise EndpointError("no endpoint URL: set datagen.endpoint_url, e.g. http://localhost:8000/v1")
        if not model:
            raise EndpointError("no model name for the endpoint: set datagen.generator_model")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self.concurrency = max(1, int(concurrency))
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "api_key_set": bool(self._api_key),
            "concurrency": self.concurrency,
        }

    def generate(self, conversations: list[Messages], params: GenerationParams) -> list[Completion]:
        seeds = [None if params.seed is None else params.seed + i for i in range(len(conversations))]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(
                pool.map(lambda cs: self.complete(cs[0], params, cs[1]), zip(conversations, seeds, strict=True))
            )

    def complete(self, messages: Messages, params: GenerationParams, seed: int | None = None) -> Completion:
        """One chat completion, with retries. Raises :class:`EndpointError` only for failures that every
        request would hit; returns a ``Completion`` with ``error`` for a failure of this request alone."""
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if seed is not None:
            body["seed"] = seed
        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code in (401, 403):
                    raise EndpointError(
                        f"endpoint {self.base_url} refused the request (HTTP {exc.code}{detail}): "
                        f"check the API key in ${self.api_key_env}"
                    ) from None
                if exc.code == 404:
                    raise EndpointError(
                        f"endpoint {url} or model {self.model!r} not found (HTTP 404{detail}): the base URL "
                        "usually ends in /v1; check the model name the server serves"
                    ) from None
                if exc.code in self.RETRY_STATUS:
                    last = f"HTTP {exc.code}{detail}"
                    retry_after = exc.headers.get("Retry-After") if exc.headers else None
                    continue
                return Completion("", error=f"HTTP {exc.code}{detail}")
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last, retry_after = f"{type(exc).__name__}: {reason}", None
                continue
            return _parse_completion(payload)
        if last.startswith("HTTP"):
            return Completion("", error=f"gave up after {self.max_retries + 1} attempts: {last}")
        raise EndpointError(
            f"endpoint {self.base_url} is unreachable after {self.max_retries + 1} attempts ({last}); "
            "is the server running and the URL right?"
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before ``attempt``: the server's Retry-After if given, else exponential backoff."""
        if retry_after:
            try:
                return min(float(retry_after), 60.0)
            except ValueError:
                pass
        return self.backoff * (2 ** (attempt - 1)) * (1 + 0.25 * random.random())


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace").strip()
    except Exception:  # the body is a courtesy; never let it mask the status
        text = ""
    return f": {text[:200]}" if text else ""


def _parse_completion(payload: bytes) -> Completion:
    try:
        data = json.loads(payload)
        content = data["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("content is not a string")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        snippet = payload[:120].decode("utf-8", "replace")
        return Completion("", error=f"malformed response ({type(exc).__name__}: {exc}): {snippet!r}")
    tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
    return Completion(content.strip(), completion_tokens=tokens)


def make_backend(datagen_cfg, base_model_path: str | Path) -> Backend:
    """The backend a profile's ``datagen`` section asks for (local model defaults to the run's base model)."""
    if datagen_cfg.backend == "local":
        return LocalBackend(datagen_cfg.generator_model or base_model_path, batch_size=datagen_cfg.batch_size)
    if datagen_cfg.backend == "openai":
        return OpenAIBackend(
            datagen_cfg.endpoint_url,
            datagen_cfg.generator_model,
            api_key_env=datagen_cfg.api_key_env,
            concurrency=datagen_cfg.batch_size,
        )
    raise ValueError(f"datagen.backend must be one of {DATAGEN_BACKENDS}, got {datagen_cfg.backend!r}")
