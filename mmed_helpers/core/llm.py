"""Text generation backends behind one small interface.

* :class:`LocalBackend` - a local ``transformers`` causal LM, batched (left padding, the tokenizer's chat
  template, configurable sampling);
* :class:`OpenAIBackend` - any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp server,
  TGI) through the official ``openai`` client: bounded concurrency, timeouts, retries with backoff on 429/5xx,
  a clear error on 401/403/404.

Both take conversations (lists of ``{"role", "content"}`` messages) and return one :class:`Completion` per
conversation, in order. A per-item failure (a malformed response, retries exhausted) comes back as a
``Completion`` with ``error`` set, so a long run counts it instead of crashing; a failure that dooms every
request (bad key, wrong URL or model, server down) raises :class:`EndpointError` with one clear line::

    >>> backend = LocalBackend("/tmp/run/models/base", batch_size=8)
    >>> out = backend.generate([[{"role": "user", "content": "What is anemia?"}]], GenerationParams(max_new_tokens=32))
    >>> out[0].text  # the tiny smoke model writes noise
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
    json_schema: dict | None = None
    """Ask for a reply that is JSON following this schema, where the backend can enforce it (an endpoint's
    ``response_format``; vLLM's guided decoding). A local model ignores it."""


@dataclass
class Completion:
    text: str
    error: str | None = None
    """Set when this one request failed (the text is then empty)."""
    completion_tokens: int = 0
    structured: bool | None = None
    """None: no schema was asked for; True: the server took ``response_format``; False: it refused it and the
    reply was asked for without."""


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


@dataclass
class _Endpoint:
    """One server of an :class:`OpenAIBackend`, and what the client has seen of it."""

    url: str
    client: Any = None
    outstanding: int = 0
    """Requests in flight to it now."""
    failures: int = 0
    """Failures in a row (lost connections, 5xx); a success resets it."""
    out_until: float = 0.0
    """Set aside until this time (``time.monotonic``) after ``fail_limit`` failures in a row."""
    served: int = 0


class OpenAIBackend:
    """Chat completions from one or several OpenAI-compatible servers, through the official ``openai`` client
    (async, at most ``concurrency`` requests in flight). The API key is read from ``api_key_env``.

    ``base_url`` is the API root, e.g. ``http://localhost:8000/v1`` (vLLM) or ``http://localhost:11434/v1``
    (Ollama), or a list of them serving the same model: each request goes to the server with the fewest
    requests in flight, and a server that fails ``fail_limit`` times in a row is set aside for ``cooldown``
    seconds while the others take its work (a request that failed on it is retried on another at once). The
    key never appears in errors, logs or :meth:`describe`. Retries are the course's own (the client's are
    off): 408/409/429/5xx and lost connections are retried with exponential backoff, or after the server's
    ``Retry-After``; a request that still fails is a counted :class:`Completion` error.
    """

    name = "openai"
    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
    NO_KEY = "no-key"
    """What the client sends when ``api_key_env`` names no set variable (servers without keys ignore it)."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        fail_limit: int = 3,
        cooldown: float = 30.0,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        urls = [u.rstrip("/") for u in urls if u and u.strip()]
        if not urls:
            raise EndpointError("no endpoint URL: set datagen.endpoint_url, e.g. http://localhost:8000/v1")
        if not model:
            raise EndpointError("no model name for the endpoint: set datagen.generator_model")
        self.base_urls = list(dict.fromkeys(urls))
        self.base_url = self.base_urls[0]
        self.model = model
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self.concurrency = max(1, int(concurrency))
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        self.fail_limit = max(1, int(fail_limit))
        self.cooldown = cooldown
        self.served: dict[str, int] = dict.fromkeys(self.base_urls, 0)
        """Replies each server gave, over this backend's life."""
        self.structured_output: bool | None = None
        """Whether the servers take ``response_format`` with a JSON schema: None until a request asked."""

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "base_url": self.base_url if len(self.base_urls) == 1 else list(self.base_urls),
            "model": self.model,
            "api_key_env": self.api_key_env,
            "api_key_set": bool(self._api_key),
            "concurrency": self.concurrency,
        }

    def generate(self, conversations: list[Messages], params: GenerationParams) -> list[Completion]:
        seeds = [None if params.seed is None else params.seed + i for i in range(len(conversations))]
        return _run_async(self._generate_all(conversations, params, seeds))

    def complete(self, messages: Messages, params: GenerationParams, seed: int | None = None) -> Completion:
        """One chat completion, with retries. Raises :class:`EndpointError` only for failures that every
        request would hit; returns a ``Completion`` with ``error`` for a failure of this request alone."""
        return _run_async(self._generate_all([messages], params, [seed]))[0]

    async def _generate_all(
        self, conversations: list[Messages], params: GenerationParams, seeds: list[int | None]
    ) -> list[Completion]:
        import asyncio

        from openai import AsyncOpenAI

        endpoints = [
            _Endpoint(
                url,
                AsyncOpenAI(api_key=self._api_key or self.NO_KEY, base_url=url, timeout=self.timeout, max_retries=0),
            )
            for url in self.base_urls
        ]
        gate = asyncio.Semaphore(self.concurrency)

        async def one(messages: Messages, seed: int | None) -> Completion:
            async with gate:
                return await self._complete(endpoints, messages, params, seed)

        try:
            results = await asyncio.gather(
                *(one(m, s) for m, s in zip(conversations, seeds, strict=True)), return_exceptions=True
            )
        finally:
            for ep in endpoints:
                self.served[ep.url] += ep.served
                await ep.client.close()
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:  # every request hit it (bad key, wrong URL, servers down): one clear error
            raise failed
        return list(results)

    async def _pick(self, endpoints: list[_Endpoint], avoid: _Endpoint | None = None) -> _Endpoint:
        """The server with the fewest requests in flight among those not set aside (the first on a tie), other
        than ``avoid`` (the one this request just failed on) where there is another; if all are set aside, wait
        for the first to come back."""
        import asyncio

        now = time.monotonic()
        ready = [ep for ep in endpoints if ep.out_until <= now]
        if any(ep is not avoid for ep in ready):
            ready = [ep for ep in ready if ep is not avoid]
        if not ready:
            back = min(endpoints, key=lambda ep: ep.out_until)
            await asyncio.sleep(back.out_until - now)
            ready = [back]
        return min(ready, key=lambda ep: ep.outstanding)

    def _failed(self, ep: _Endpoint, endpoints: list[_Endpoint]) -> bool:
        """Count a failure of ``ep``; True if another server can take the retry at once (``ep`` set aside)."""
        ep.failures += 1
        if ep.failures >= self.fail_limit and len(endpoints) > 1:
            ep.out_until = time.monotonic() + self.cooldown
            ep.failures = 0
        return len(endpoints) > 1 and any(e is not ep and e.out_until <= time.monotonic() for e in endpoints)

    async def _complete(
        self, endpoints: list[_Endpoint], messages: Messages, params: GenerationParams, seed: int | None
    ) -> Completion:
        import asyncio

        import openai

        extra: dict[str, Any] = {"seed": seed} if seed is not None else {}
        structured = params.json_schema is not None and self.structured_output is not False
        last, retry_after, wait, failed_on = "", None, False, None
        attempt = 0  # retries so far; asking again without the schema is a new request, not a retry
        while attempt <= self.max_retries:
            if wait:
                await asyncio.sleep(self._delay(attempt, retry_after))
            ep = await self._pick(endpoints, avoid=failed_on)
            failed_on = ep
            ep.outstanding += 1
            if structured:
                extra["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "reply", "schema": params.json_schema, "strict": True},
                }
            else:
                extra.pop("response_format", None)
            try:
                response = await ep.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    max_tokens=params.max_new_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    **extra,
                )
            except openai.APIStatusError as exc:
                code, detail = exc.status_code, _error_detail(exc)
                if structured and code in (400, 422):  # no structured output here: ask again without it
                    self.structured_output, structured, wait, failed_on = False, False, False, None
                    continue
                if code in (401, 403):
                    raise EndpointError(
                        f"endpoint {ep.url} refused the request (HTTP {code}{detail}): "
                        f"check the API key in ${self.api_key_env}"
                    ) from None
                if code == 404:
                    raise EndpointError(
                        f"endpoint {ep.url}/chat/completions or model {self.model!r} not found (HTTP 404"
                        f"{detail}): the base URL usually ends in /v1; check the model name the server serves"
                    ) from None
                if code in self.RETRY_STATUS:
                    last, retry_after = f"HTTP {code}{detail}", exc.response.headers.get("retry-after")
                    # a busy server (429) is not a broken one; a 5xx counts towards setting it aside
                    wait = code in (408, 409, 429) or not self._failed(ep, endpoints)
                    attempt += 1
                    continue
                return Completion("", error=f"HTTP {code}{detail}")
            except openai.APIConnectionError as exc:  # refused, reset, timed out (APITimeoutError)
                cause = exc.__cause__ or exc
                last, retry_after = f"{type(exc).__name__}: {cause}", None
                wait = not self._failed(ep, endpoints)
                attempt += 1
                continue
            except openai.APIResponseValidationError as exc:
                return Completion("", error=f"malformed response ({type(exc).__name__}: {exc})")
            finally:
                ep.outstanding -= 1
            ep.failures = 0
            ep.served += 1
            if structured:
                self.structured_output = True
            reply = _completion(response)
            reply.structured = structured if params.json_schema is not None else None
            return reply
        if last.startswith("HTTP"):
            return Completion("", error=f"gave up after {self.max_retries + 1} attempts: {last}")
        if len(self.base_urls) == 1:
            where = f"endpoint {self.base_url} is"
        else:
            where = f"endpoints {', '.join(self.base_urls)} are"
        raise EndpointError(
            f"{where} unreachable after {self.max_retries + 1} attempts ({last}); "
            "is the server running and the URL right?"
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before ``attempt``: the server's Retry-After if given, else exponential backoff."""
        if retry_after:
            try:
                return min(float(retry_after), 60.0)
            except ValueError:
                pass
        return self.backoff * (2 ** (max(attempt, 1) - 1)) * (1 + 0.25 * random.random())


def _run_async(coro):
    """Run ``coro`` to its end from synchronous code, in a thread of its own: a notebook's kernel already runs
    an event loop in the main thread, where ``asyncio.run`` is refused."""
    import asyncio

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _error_detail(exc) -> str:
    try:
        text = exc.response.text.strip()
    except Exception:  # the body is a courtesy; never let it mask the status
        text = ""
    return f": {text[:200]}" if text else ""


def _completion(response) -> Completion:
    """The client's parsed reply as a :class:`Completion`; a reply without a message's text is a counted
    ``malformed response``."""
    try:
        content = response.choices[0].message.content
        if not isinstance(content, str):
            raise TypeError("content is not a string")
    except (IndexError, AttributeError, TypeError) as exc:
        try:
            snippet = response.model_dump_json()[:120]
        except Exception:
            snippet = repr(response)[:120]
        return Completion("", error=f"malformed response ({type(exc).__name__}: {exc}): {snippet!r}")
    usage = getattr(response, "usage", None)
    return Completion(content.strip(), completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))


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
