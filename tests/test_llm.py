"""Generation backends: the local model, and the endpoint client against a real HTTP server on 127.0.0.1."""

import json
import socket
import threading
import time

import pytest

from mmed_helpers.core.llm import Completion, EndpointError, GenerationParams, LocalBackend, OpenAIBackend
from mmed_helpers.serve import ChatHandler, ChatServer

CONVS = [
    [{"role": "user", "content": "What is chronic kidney disease and how is it staged?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "慢性乙型肝炎是什么？"}],
    [{"role": "user", "content": "Эпилепсия представляет собой хроническое заболевание"}],
    [{"role": "user", "content": "¿Qué causa el dengue?"}],
]
GREEDY = GenerationParams(max_new_tokens=10, temperature=0.0)


@pytest.fixture(scope="module")
def local(tiny_dir):
    return LocalBackend(tiny_dir, batch_size=4)


def test_batched_generation_equals_one_at_a_time(local):
    """Left padding must not change what the model generates."""
    batched = local.generate(CONVS, GREEDY)
    local.batch_size = 1
    try:
        single = local.generate(CONVS, GREEDY)
    finally:
        local.batch_size = 4
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens == 10 and c.error is None for c in batched)


def test_sampling_is_seeded(local):
    params = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.95, seed=7)
    a = [c.text for c in local.generate(CONVS, params)]
    b = [c.text for c in local.generate(CONVS, params)]
    c = [c.text for c in local.generate(CONVS, GenerationParams(10, 1.0, 0.95, seed=8))]
    assert a == b and a != c


def test_tokenizer_pads_left_for_generation(local):
    assert local.tokenizer.padding_side == "left"


@pytest.fixture(scope="module")
def server(local):
    with ChatServer(local, model_name="tiny", api_key="s3cret-key") as srv:
        yield srv


def test_endpoint_answers_like_the_local_model(server, local, monkeypatch):
    monkeypatch.setenv("COURSE_TEST_KEY", "s3cret-key")
    client = OpenAIBackend(server.base_url, "tiny", api_key_env="COURSE_TEST_KEY", concurrency=3)
    remote = client.generate(CONVS, GREEDY)
    direct = local.generate(CONVS, GREEDY)
    assert [c.text for c in remote] == [c.text for c in direct]
    assert all(c.error is None and c.completion_tokens == 10 for c in remote)
    info = client.describe()
    assert info["api_key_set"] and "s3cret-key" not in json.dumps(info)


def test_wrong_key_is_one_clear_error_without_the_key(server, monkeypatch):
    monkeypatch.setenv("COURSE_TEST_KEY", "wrong-key-123")
    client = OpenAIBackend(server.base_url, "tiny", api_key_env="COURSE_TEST_KEY")
    with pytest.raises(EndpointError, match=r"HTTP 401.*check the API key in \$COURSE_TEST_KEY") as err:
        client.generate(CONVS[:1], GREEDY)
    assert "wrong-key-123" not in str(err.value)


def test_unknown_model_is_a_404_error(server, monkeypatch):
    monkeypatch.setenv("COURSE_TEST_KEY", "s3cret-key")
    client = OpenAIBackend(server.base_url, "gpt-9", api_key_env="COURSE_TEST_KEY")
    with pytest.raises(EndpointError, match=r"model 'gpt-9' not found \(HTTP 404"):
        client.generate(CONVS[:1], GREEDY)


def test_models_route(server):
    import urllib.request

    req = urllib.request.Request(server.base_url + "/models", headers={"Authorization": "Bearer s3cret-key"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.load(resp)["data"][0]["id"] == "tiny"


def test_endpoint_down_is_one_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "tiny", api_key_env="", max_retries=2, backoff=0.01)
    with pytest.raises(EndpointError, match=r"unreachable after 3 attempts.*is the server running"):
        client.generate(CONVS[:2], GREEDY)


class FlakyHandler(ChatHandler):
    """The real handler behind a fault injector: the first ``fail_first`` requests get ``fail_status``."""

    lock = threading.Lock()
    seen = 0
    fail_first = 2
    fail_status = 429
    body = None

    def do_POST(self):  # noqa: N802
        cls = type(self)
        with cls.lock:
            cls.seen += 1
            n = cls.seen
        if n <= cls.fail_first:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if cls.body is not None:
                data = cls.body
                self.send_response(200)
            else:
                data = b'{"error": {"message": "slow down"}}'
                self.send_response(cls.fail_status)
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_POST()


def _flaky(local, fail_first, status=429, body=None):
    handler = type(
        "H",
        (FlakyHandler,),
        {"seen": 0, "fail_first": fail_first, "fail_status": status, "body": body, "lock": threading.Lock()},
    )
    return ChatServer(local, model_name="tiny", handler=handler), handler


def test_429_is_retried_then_succeeds(local):
    srv, handler = _flaky(local, fail_first=2)
    with srv:
        client = OpenAIBackend(srv.base_url, "tiny", api_key_env="", max_retries=3, backoff=0.01)
        out = client.generate(CONVS[:1], GREEDY)
    assert out[0].error is None and out[0].text == local.generate(CONVS[:1], GREEDY)[0].text
    assert handler.seen == 3


def test_persistent_5xx_is_a_counted_failure_not_a_crash(local):
    srv, handler = _flaky(local, fail_first=100, status=503)
    with srv:
        client = OpenAIBackend(srv.base_url, "tiny", api_key_env="", max_retries=2, backoff=0.01)
        out = client.generate(CONVS[:2], GREEDY)
    assert all(c.text == "" and "gave up after 3 attempts: HTTP 503" in c.error for c in out)
    assert handler.seen == 6


def test_malformed_response_is_a_counted_failure(local):
    srv, _ = _flaky(local, fail_first=1, body=b'{"choices": []}')
    with srv:
        client = OpenAIBackend(srv.base_url, "tiny", api_key_env="", backoff=0.01)
        out = client.generate(CONVS[:1], GREEDY)
    assert isinstance(out[0], Completion) and out[0].error.startswith("malformed response (IndexError")


class SlowHandler(ChatHandler):
    lock = threading.Lock()
    active = 0
    peak = 0

    def do_POST(self):  # noqa: N802
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
        self._counted = True
        time.sleep(0.2)
        try:
            super().do_POST()
        finally:
            self._leave()

    def send_response(self, *args, **kwargs):
        # leave before the reply goes out: once the client has it, it may start its next request at once
        self._leave()
        super().send_response(*args, **kwargs)

    def _leave(self):
        if getattr(self, "_counted", False):
            self._counted = False
            with type(self).lock:
                type(self).active -= 1


def test_concurrency_is_bounded(local):
    with ChatServer(local, model_name="tiny", handler=SlowHandler) as srv:
        client = OpenAIBackend(srv.base_url, "tiny", api_key_env="", concurrency=2)
        out = client.generate(CONVS * 2, GREEDY)
    assert len(out) == 10 and all(c.error is None for c in out)
    assert SlowHandler.peak == 2


def test_missing_url_or_model_is_refused():
    with pytest.raises(EndpointError, match="no endpoint URL"):
        OpenAIBackend("", "m")
    with pytest.raises(EndpointError, match="no model name"):
        OpenAIBackend("http://127.0.0.1:1/v1", "")


def test_the_official_client_is_the_only_http_client_of_the_backends():
    """The endpoint backend speaks HTTP only through the ``openai`` package: no module of the standard library
    or another client is imported by ``core/llm.py``."""
    import ast
    from pathlib import Path

    import mmed_helpers.core.llm as llm

    tree = ast.parse(Path(llm.__file__).read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "openai" in imported
    assert not imported & {"urllib", "http", "requests", "httpx", "httpx2", "aiohttp", "urllib3", "socket"}


def test_the_backend_works_from_inside_a_running_event_loop(server, local, monkeypatch):
    """A notebook cell runs inside the kernel's event loop, where ``asyncio.run`` is refused: the async client
    must still answer there."""
    import asyncio

    monkeypatch.setenv("COURSE_TEST_KEY", "s3cret-key")
    client = OpenAIBackend(server.base_url, "tiny", api_key_env="COURSE_TEST_KEY", concurrency=2)

    async def cell():
        return client.generate(CONVS[:2], GREEDY)

    out = asyncio.run(cell())
    assert [c.text for c in out] == [c.text for c in local.generate(CONVS[:2], GREEDY)]


# --------------------------------------------------------------------------- several endpoints


@pytest.fixture(scope="module")
def local2(tiny_dir):
    """A second copy of the tiny model, for a second server (one model object is not shared across threads)."""
    return LocalBackend(tiny_dir, batch_size=4)


class CountingHandler(SlowHandler):
    """The real handler, slowed (so that requests overlap) and counted per server class."""

    lock = threading.Lock()
    active = 0
    peak = 0


class DyingHandler(ChatHandler):
    """Serves ``serve`` requests, then dies at the next one: the connection is dropped without a reply and the
    server stops listening (a crashed or killed server)."""

    lock = threading.Lock()
    seen = 0
    serve = 3

    def do_POST(self):  # noqa: N802
        cls = type(self)
        with cls.lock:
            cls.seen += 1
            n = cls.seen
        if n <= cls.serve:
            return super().do_POST()
        self.close_connection = True
        httpd = self.server
        threading.Thread(target=lambda: (httpd.shutdown(), httpd.server_close()), daemon=True).start()


def test_requests_are_spread_over_servers_by_fewest_in_flight(local, local2):
    handlers = [type(f"C{i}", (CountingHandler,), {"lock": threading.Lock(), "active": 0, "peak": 0}) for i in (1, 2)]
    with (
        ChatServer(local, model_name="tiny", handler=handlers[0]) as a,
        ChatServer(local2, model_name="tiny", handler=handlers[1]) as b,
    ):
        client = OpenAIBackend([a.base_url, b.base_url], "tiny", api_key_env="", concurrency=4)
        out = client.generate(CONVS * 2, GREEDY)
    assert [c.text for c in out] == [c.text for c in local.generate(CONVS * 2, GREEDY)]
    served = list(client.served.values())
    assert sum(served) == 10 and min(served) >= 3, client.served  # both took a share
    assert all(h.peak >= 2 for h in handlers)  # each had requests in flight at once
    assert client.describe()["base_url"] == [a.base_url, b.base_url]


def test_a_server_that_dies_mid_run_loses_nothing_and_the_other_finishes(local, local2):
    dying = type("D", (DyingHandler,), {"lock": threading.Lock(), "seen": 0, "serve": 2})
    a = ChatServer(local, model_name="tiny", handler=dying).start()
    try:
        with ChatServer(local2, model_name="tiny") as b:
            client = OpenAIBackend([a.base_url, b.base_url], "tiny", api_key_env="", concurrency=2, backoff=0.01)
            out = client.generate(CONVS * 3, GREEDY)
    finally:
        a.httpd.server_close()
    assert all(c.error is None for c in out), [c.error for c in out]
    assert [c.text for c in out] == [c.text for c in local.generate(CONVS * 3, GREEDY)]
    assert client.served[a.base_url] == 2 and client.served[b.base_url] == 13


def test_all_servers_down_is_one_clear_error_naming_them():
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    client = OpenAIBackend(urls, "tiny", api_key_env="", max_retries=2, backoff=0.01, cooldown=0.05)
    with pytest.raises(
        EndpointError, match=rf"endpoints .*:{ports[0]}/v1, .*:{ports[1]}/v1 are unreachable after 3 attempts"
    ):
        client.generate(CONVS[:2], GREEDY)


def test_notebook_01s_generation_across_two_servers_survives_one_dying(local, local2, tmp_path):
    """The whole generation step on two endpoints (``datagen.endpoint_url`` a list), one killed after a few
    requests: every job's output is stored exactly once, without error, and the outputs are those of a run on
    one server."""
    from mmed_helpers.core.config import load_profile
    from mmed_helpers.core.corpus import load_corpus, select_passages
    from mmed_helpers.core.jobs import JsonlStore
    from mmed_helpers.core.layout import RunLayout
    from mmed_helpers.core.llm import make_backend
    from mmed_helpers.steps.generate import STEPS, run_datagen

    settings = {
        "languages": ["en", "fr"],
        "datagen.backend": "openai",
        "datagen.generator_model": "tiny",
        "datagen.api_key_env": "NO_SUCH_KEY_VARIABLE",
        "datagen.temperature": 0.0,
        "datagen.max_new_tokens": 12,
        "datagen.batch_size": 3,
        "datagen.structured_output": False,  # the course's server refuses it: every request here is served
    }
    passages = select_passages(load_corpus(["en", "fr"]), 2)

    def stores(root):
        run = RunLayout(root)
        return {step: JsonlStore(run.generation_store(step)).records for step in STEPS}, run

    dying = type("D", (DyingHandler,), {"lock": threading.Lock(), "seen": 0, "serve": 4})
    a = ChatServer(local, model_name="tiny", handler=dying).start()
    try:
        with ChatServer(local2, model_name="tiny") as b:
            cfg = load_profile("smoke", {**settings, "datagen.endpoint_url": [a.base_url, b.base_url]})
            backend = make_backend(cfg.datagen, "")
            run_datagen(cfg, RunLayout(tmp_path / "two"), backend, progress=False, passages=passages)
    finally:
        a.httpd.server_close()
    assert backend.served[a.base_url] == 4 and backend.served[b.base_url] > 4
    with ChatServer(local, model_name="tiny") as one:
        cfg1 = load_profile("smoke", {**settings, "datagen.endpoint_url": one.base_url})
        run_datagen(
            cfg1, RunLayout(tmp_path / "one"), make_backend(cfg1.datagen, ""), progress=False, passages=passages
        )
    two, run = stores(tmp_path / "two")
    ref, _ = stores(tmp_path / "one")
    for step in STEPS:
        lines = run.generation_store(step).read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(two[step]) > 0  # one line per job: nothing asked twice
        assert all(not r["error"] for r in two[step].values())
        assert {k: r["output"] for k, r in two[step].items()} == {k: r["output"] for k, r in ref[step].items()}


# --------------------------------------------------------------------------- structured output


def test_the_output_schemas_accept_every_prompts_worked_example_and_reject_planted_defects():
    """The schema an endpoint is asked to follow is the format the prompts ask for: each language's worked
    example validates (and parses), and an item with a fifth option, a missing rationale or a letter that is no
    option does not."""
    import jsonschema

    from mmed_helpers.core.languages import LANGUAGES
    from mmed_helpers.steps.generate import OUTPUT_SCHEMAS, load_prompt, parse_ift, parse_mc

    for lang in LANGUAGES:
        for kind, parse in (("ift", parse_ift), ("mc", parse_mc)):
            for example in load_prompt(kind, lang).examples:
                obj = json.loads(example["output"])
                jsonschema.validate(obj, OUTPUT_SCHEMAS[kind])
                assert parse(example["output"])
    good = json.loads(load_prompt("mc", "en").examples[0]["output"])
    planted = [
        {**good, "options": {**good["options"], "E": "Another option"}},
        {k: v for k, v in good.items() if k != "rationale"},
        {**good, "answer": "E"},
    ]
    for bad in planted:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, OUTPUT_SCHEMAS["mc"])


class GuidedHandler(ChatHandler):
    """A server that honours ``response_format`` as vLLM's guided decoding does: the reply follows the schema
    (its strings filled from the model's own text). It records the formats it was asked for."""

    formats: list = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        req = json.loads(raw)
        fmt = req.pop("response_format", None)
        type(self).formats.append(fmt)
        if fmt is None:
            return self._replay(json.dumps(req).encode())
        with self.server.lock:
            text = self.server.backend.generate([req["messages"]], GenerationParams(8, 0.0))[0].text or "text"
        schema = fmt["json_schema"]["schema"]

        def fill(node):
            if node.get("enum"):
                return node["enum"][0]
            if node["type"] == "object":
                return {k: fill(v) for k, v in node["properties"].items()}
            return f"{text} ({len(text)})"

        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(fill(schema))}}]}
        data = json.dumps({**body, "object": "chat.completion", "model": req["model"], "id": "x", "created": 0})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data.encode())))
        self.end_headers()
        self.wfile.write(data.encode())

    def _replay(self, body: bytes):
        import io

        self.rfile = io.BytesIO(body)
        self.headers.replace_header("Content-Length", str(len(body)))
        return super().do_POST()


def test_structured_output_is_asked_for_used_where_honoured_and_dropped_where_refused(local, tmp_path):
    """Notebook 01's generation on an endpoint asks for the IFT and MC schemas. A server that honours them gives
    replies that all parse; the course's own server refuses them with a 400, the client asks again without and
    stops asking, and the report counts both ways. (What the filters make of the replies does not matter here:
    the seeds keep each run from having nothing to save.)"""
    from mmed_helpers.core.config import load_profile
    from mmed_helpers.core.corpus import load_corpus, select_passages
    from mmed_helpers.core.layout import RunLayout
    from mmed_helpers.core.llm import make_backend
    from mmed_helpers.steps.generate import OUTPUT_SCHEMAS, run_datagen

    passages = select_passages(load_corpus(["en"]), 2)
    settings = {
        "languages": ["en"],
        "datagen.backend": "openai",
        "datagen.generator_model": "tiny",
        "datagen.api_key_env": "NO_SUCH_KEY_VARIABLE",
        "datagen.max_new_tokens": 8,
    }
    guided = type("G", (GuidedHandler,), {"formats": []})
    with ChatServer(local, model_name="tiny", handler=guided) as srv:
        cfg = load_profile("smoke", {**settings, "datagen.endpoint_url": srv.base_url})
        backend = make_backend(cfg.datagen, "")
        result = run_datagen(cfg, RunLayout(tmp_path / "guided"), backend, progress=False, passages=passages)
    n = {k: len(passages) * getattr(cfg.datagen, f"{k}_per_passage") for k in ("ift", "mc")}
    asked = [f["json_schema"]["schema"] for f in guided.formats if f]
    assert None in guided.formats  # condensing asks for no schema
    assert asked.count(OUTPUT_SCHEMAS["ift"]) == n["ift"] and asked.count(OUTPUT_SCHEMAS["mc"]) == n["mc"]
    for kind in ("ift", "mc"):
        counts = result.reports[kind].to_dict()["structured_output"]
        assert counts == {"with_schema": n[kind], "parsed_with_schema": n[kind]}, counts
    assert backend.structured_output is True

    with ChatServer(local, model_name="tiny") as srv:  # the course's server: no guided decoding
        cfg = load_profile("smoke", {**settings, "datagen.endpoint_url": srv.base_url})
        backend = make_backend(cfg.datagen, "")
        plain = run_datagen(cfg, RunLayout(tmp_path / "plain"), backend, progress=False, passages=passages)
    assert backend.structured_output is False
    for kind in ("ift", "mc"):
        counts = plain.reports[kind].structured
        assert counts["without_schema"] == n[kind] and counts["with_schema"] == 0
        assert counts["parsed_without_schema"] == n[kind] - plain.reports[kind].rejected["unparseable"]


# --------------------------------------------------------------------------- the course's server as a peer


def test_the_server_batches_concurrent_requests_and_answers_as_one_at_a_time(local):
    """``batch_size`` 4: eight concurrent greedy requests are generated in batches of more than one, and each
    reply is the one the model gives alone; with ``batch_size`` 1 every batch is one request."""
    convs = CONVS + CONVS[:3]
    alone = [local.generate([c], GREEDY)[0].text for c in convs]
    with ChatServer(local, model_name="tiny", batch_size=4) as srv:
        out = OpenAIBackend(srv.base_url, "tiny", api_key_env="", concurrency=8).generate(convs, GREEDY)
        sizes = srv.batch_sizes
    assert [c.text for c in out] == alone
    assert sum(sizes) == 8 and max(sizes) > 1 and max(sizes) <= 4, sizes
    with ChatServer(local, model_name="tiny", batch_size=1) as srv:
        OpenAIBackend(srv.base_url, "tiny", api_key_env="", concurrency=8).generate(convs, GREEDY)
        assert srv.batch_sizes == [1] * 8


def test_the_server_answers_raw_http_as_the_official_client_reads_it(server, local):
    """The same request by hand (urllib, raw JSON) and through the official client: one reply, in the
    chat-completions shape."""
    import urllib.request

    from openai import OpenAI

    body = {"model": "tiny", "messages": CONVS[0], "max_tokens": 10, "temperature": 0.0}
    req = urllib.request.Request(
        server.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer s3cret-key", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = json.load(resp)
    assert raw["object"] == "chat.completion" and raw["choices"][0]["message"]["role"] == "assistant"
    client = OpenAI(api_key="s3cret-key", base_url=server.base_url, max_retries=0)
    reply = client.chat.completions.create(**body)
    assert reply.choices[0].message.content == raw["choices"][0]["message"]["content"]
    assert reply.usage.completion_tokens == raw["usage"]["completion_tokens"] == 10
    with pytest.raises(Exception, match=r"not supported by this server: it cannot constrain decoding"):
        client.chat.completions.create(**body, response_format={"type": "json_object"})


def test_two_served_models_generate_notebook_01_and_one_killed_mid_run_loses_nothing(smoke_course, tmp_path):
    """As a user would: ``mmed-course serve`` twice on two ports, notebook 01 run with both as
    ``datagen.endpoint_url``, one server killed (SIGKILL) while generation is under way. The run completes,
    every job is stored once without error, and the killed server's share went to the other."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ROOT

    from mmed_helpers.core.jobs import JsonlStore
    from mmed_helpers.core.layout import RunLayout
    from mmed_helpers.steps.generate import STEPS

    course, _ = smoke_course
    model = json.loads((course / "base_model.json").read_text())["path"]
    cli = str(Path(sys.executable).with_name("mmed-course"))
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    env = {**os.environ}
    servers = [
        subprocess.Popen(
            [cli, "serve", model, "--name", "base", "--port", str(p), "--batch-size", "4"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in ports
    ]
    try:
        for proc in servers:  # wait until each says it is serving (model-loading lines may come first)
            seen = [proc.stdout.readline() for _ in range(1)]
            while "serving" not in seen[-1] and seen[-1] and len(seen) < 200:
                seen.append(proc.stdout.readline())
            assert "serving" in seen[-1], seen
        run = tmp_path / "run"
        run.mkdir()
        (run / "base_model.json").write_text((course / "base_model.json").read_text())
        urls = ", ".join(f"http://127.0.0.1:{p}/v1" for p in ports)
        job = subprocess.Popen(
            [
                cli,
                "run",
                "--profile",
                "smoke",
                "--run-dir",
                str(run),
                "--only",
                "1",
                "--no-progress",
                "--set",
                "datagen.backend=openai",
                "--set",
                "datagen.generator_model=base",
                "--set",
                f"datagen.endpoint_url=[{urls}]",
                "--set",
                "datagen.passages_per_language=5",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        store = RunLayout(run).generation_store("ift")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and job.poll() is None:
            if store.is_file() and len(store.read_text(encoding="utf-8").splitlines()) >= 10:
                break
            time.sleep(0.05)
        assert job.poll() is None, "the run ended before a server could be killed"
        servers[0].send_signal(signal.SIGKILL)  # mid-run: requests in flight on it are lost with it
        out, _ = job.communicate(timeout=900)
        assert job.returncode == 0, out[-3000:]
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(timeout=30)
    layout = RunLayout(run)
    for step in STEPS:
        records = JsonlStore(layout.generation_store(step)).records
        lines = layout.generation_store(step).read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(records) > 0 and all(not r["error"] for r in records.values()), step
    manifest = json.loads((layout.step_dir("generate") / "manifest.json").read_text())
    assert manifest["outputs"]["backend"]["base_url"] == [f"http://127.0.0.1:{p}/v1" for p in ports]


def test_asking_again_without_the_schema_is_not_a_retry(server, local, monkeypatch):
    """With no retries allowed, a server that refuses ``response_format`` still answers the request asked
    again without it."""
    monkeypatch.setenv("COURSE_TEST_KEY", "s3cret-key")
    client = OpenAIBackend(server.base_url, "tiny", api_key_env="COURSE_TEST_KEY", max_retries=0)
    params = GenerationParams(max_new_tokens=10, temperature=0.0, json_schema={"type": "object"})
    out = client.generate(CONVS[:2], params)
    assert [c.text for c in out] == [c.text for c in local.generate(CONVS[:2], GREEDY)]
    assert all(c.error is None and c.structured is False for c in out) and client.structured_output is False
