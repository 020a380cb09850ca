"""A small OpenAI-compatible chat-completions server in front of any backend (default: a local model).

It lets you try the endpoint path of the course without vLLM or Ollama, and the tests use it as the real
HTTP peer of :class:`~mmed_helpers.llm.OpenAIBackend`::

    mmed-course serve runs/smoke/models/base --port 8001
    # then: datagen.backend=openai, datagen.endpoint_url=http://127.0.0.1:8001/v1, datagen.generator_model=base

    >>> with ChatServer(LocalBackend("/tmp/run/models/base"), model_name="tiny") as server:
    ...     print(server.base_url)   # http://127.0.0.1:<port>/v1

Routes: ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming). Requests that arrive together
are generated together, up to ``batch_size`` at a time (``--batch-size``), one batch at a time (the model is
not thread-safe). Binds to 127.0.0.1 unless told otherwise. A
``response_format`` asking for JSON is checked and refused with a 400 that says why (the server cannot
constrain decoding), which is what a client that asks for structured output must expect of some servers.
"""

from __future__ import annotations

import hmac
import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .core.llm import Backend, Completion, GenerationParams


class ChatHandler(BaseHTTPRequestHandler):
    server: _Server  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: the caller reports
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def _authorised(self) -> bool:
        key = self.server.api_key
        if not key:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())

    def do_GET(self):  # noqa: N802 (http.server naming)
        if self.path.rstrip("/") != "/v1/models":
            return self._error(404, f"no route {self.path}", "not_found")
        if not self._authorised():
            return self._error(401, "invalid API key", "invalid_request_error")
        self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model"}]})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}", "not_found")
        if not self._authorised():
            return self._error(401, "invalid API key", "invalid_request_error")
        try:
            req = json.loads(raw)
            messages = req["messages"]
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages
            ):
                raise ValueError("messages must be a list of {role, content}")
        except (ValueError, KeyError, TypeError) as exc:
            return self._error(400, f"bad request: {exc}", "invalid_request_error")
        if req.get("model") != self.server.model_name:
            return self._error(404, f"model {req.get('model')!r} not found", "not_found")
        if req.get("stream"):
            return self._error(400, "streaming is not supported", "invalid_request_error")
        fmt = req.get("response_format")
        if fmt is not None:
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind not in ("text", "json_object", "json_schema"):
                return self._error(400, f"bad response_format {fmt!r}", "invalid_request_error")
            if kind == "json_schema" and not isinstance((fmt.get("json_schema") or {}).get("schema"), dict):
                return self._error(400, "response_format json_schema needs json_schema.schema", "invalid_request_error")
            if kind != "text":
                return self._error(
                    400,
                    f"response_format {kind!r} is not supported by this server: it cannot constrain decoding "
                    "(vLLM can); ask without it",
                    "invalid_request_error",
                )
        params = GenerationParams(
            max_new_tokens=int(req.get("max_tokens") or 256),
            temperature=float(req.get("temperature", 0.7)),
            top_p=float(req.get("top_p", 1.0)),
            seed=req.get("seed"),
        )
        completion = self.server.batcher.submit(messages, params)
        if completion.error:
            return self._error(500, completion.error, "server_error")
        self._send(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.server.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": completion.text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"completion_tokens": completion.completion_tokens},
            },
        )


class _Batcher:
    """Concurrent requests, generated together: a worker thread takes the first waiting request, gathers up
    to ``batch_size`` that arrive within ``wait`` seconds, and runs each group of them that shares its
    generation settings as one batch (greedy replies are those of one-at-a-time generation; sampled ones
    depend on the batch, as on any batching server). ``sizes`` holds every batch's size."""

    def __init__(self, backend: Backend, lock: threading.Lock, batch_size: int = 1, wait: float = 0.01):
        self.backend, self.lock, self.batch_size, self.wait = backend, lock, max(1, batch_size), wait
        self.queue: queue.Queue = queue.Queue()
        self.sizes: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def submit(self, messages: list[dict[str, str]], params: GenerationParams) -> Completion:
        done: Future = Future()
        self.queue.put((messages, params, done))
        return done.result()

    def close(self) -> None:
        self.queue.put(None)

    def _gather(self, first) -> list:
        batch = [first]
        deadline = time.monotonic() + self.wait
        while len(batch) < self.batch_size:
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                self.queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (first := self.queue.get()) is not None:
            batch = self._gather(first)
            self.sizes.append(len(batch))
            groups: dict[tuple, list] = {}
            for item in batch:
                p = item[1]
                groups.setdefault((p.max_new_tokens, p.temperature, p.top_p), []).append(item)
            for (max_new, temperature, top_p), items in groups.items():
                params = GenerationParams(max_new, temperature, top_p, items[0][1].seed)
                try:
                    with self.lock:
                        outs = self.backend.generate([m for m, _, _ in items], params)
                except Exception as exc:  # the requests get the error, the server goes on
                    for _, _, done in items:
                        done.set_exception(exc)
                    continue
                for (_, _, done), out in zip(items, outs, strict=True):
                    done.set_result(out)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend: Backend
    model_name: str
    api_key: str | None
    lock: threading.Lock
    batcher: _Batcher


class ChatServer:
    """Serve ``backend`` as ``model_name`` on ``host:port`` (port 0 = any free port) in a background thread."""

    def __init__(
        self,
        backend: Backend,
        model_name: str = "local",
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        handler: type[BaseHTTPRequestHandler] = ChatHandler,
        batch_size: int = 1,
    ):
        self.httpd = _Server((host, port), handler)
        self.httpd.backend = backend
        self.httpd.model_name = model_name
        self.httpd.api_key = api_key
        self.httpd.lock = threading.Lock()
        self.httpd.batcher = _Batcher(backend, self.httpd.lock, batch_size)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ChatServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def batch_sizes(self) -> list[int]:
        """The size of every batch generated so far."""
        return list(self.httpd.batcher.sizes)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd.batcher.close()
        if self._thread:
            self._thread.join(timeout=10)

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
