"""Issue 24: the second probe's findings, replayed. Work bounds and deadlines on the fixture catalogs and heads (no
language model); dropped streams, forged addresses and ids, idle sockets and the HTTP details through a live server
on the embedded model, with raw sockets where a well-behaved client could not send the request."""

from __future__ import annotations

import json
import random
import re
import socket
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from cybersecqwen.errors import LimitExceeded
from tests.heads.conftest import heads_corpus, trained_heads  # noqa: F401 - fixtures
from tests.serve.test_promises import CHAT, ScriptedBackend, source_mirror  # noqa: F401


def addresses(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return " ".join(f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(n))


@pytest.fixture
def advisory_app(trained_heads, source_mirror, tmp_path):  # noqa: F811
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService
    from cybersecqwen.heads import load_heads
    from cybersecqwen.serve.app import ServerSettings, create_app

    service = CtiService(None, load_catalogs(source_mirror), load_heads(trained_heads))
    settings = ServerSettings(model_name="heads", audit_log=tmp_path / "audit.jsonl", max_body_bytes=2_000_000)
    return TestClient(create_app(None, service, settings), base_url="http://localhost")


# --- 2. every job has a cost bound and checks the deadline ------------------------------------------------------
def test_an_advisory_of_1500_indicators_with_stix_is_answered_in_bounded_time(advisory_app):
    text = "APT28 campaign. Indicators observed: " + addresses(1500)
    started = time.perf_counter()
    reply = advisory_app.post("/v1/advisory/analyze", json={"text": text, "stix": True})
    seconds = time.perf_counter() - started
    assert reply.status_code == 200, reply.text[:300]
    body = reply.json()
    assert len(body["iocs"]) == 1500
    indicators = [o for o in body["stix"]["objects"] if o["type"] == "indicator"]
    assert len(indicators) == 1500
    assert seconds < 30  # the issue's bound (stix2's pretty printer alone took about 50 s here); measured 3.5 s


def test_more_indicators_than_the_cap_is_a_413_naming_it(advisory_app):
    from cybersecqwen.answering.advisory import MAX_INDICATORS

    reply = advisory_app.post("/v1/advisory/analyze", json={"text": "Indicators: " + addresses(MAX_INDICATORS + 50)})
    assert reply.status_code == 413
    assert f"{MAX_INDICATORS:,}" in reply.json()["error"]["message"] and "indicators" in reply.json()["error"]["message"]


def test_a_stix_bundle_over_its_object_cap_is_refused_before_it_is_built():
    from cybersecqwen.answering.advisory import MAX_STIX_OBJECTS, to_stix

    ioc = {"type": "ipv4", "value": "198.51.100.1", "flags": []}
    actors = [{"name": f"Group {i}", "aliases": []} for i in range(10)]
    result = {"weaknesses": [], "cves": [], "techniques": [], "actors": actors, "summary": {"text": ""},
              "iocs": [ioc] * (MAX_STIX_OBJECTS // 10)}
    with pytest.raises(LimitExceeded, match=f"{MAX_STIX_OBJECTS:,}"):
        to_stix(result)


def test_the_finders_stop_at_the_request_deadline(service_for_deadline):
    from cybersecqwen.answering import deadline
    from cybersecqwen.answering.advisory import analyze, find_iocs, to_stix

    text = "Indicators: " + addresses(300)
    deadline.set_deadline(time.monotonic() - 1)  # the request's 504 already went out
    try:
        for job in (lambda: find_iocs(text), lambda: analyze(service_for_deadline, text),
                    lambda: to_stix({"weaknesses": [], "cves": [], "techniques": [], "actors": [], "summary": {"text": ""},
                                     "iocs": [{"type": "ipv4", "value": "198.51.100.1", "flags": []}]})):
            with pytest.raises(deadline.DeadlinePassed):
                job()
    finally:
        deadline.set_deadline(None)


@pytest.fixture
def service_for_deadline(source_mirror):  # noqa: F811
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService

    return CtiService(ScriptedBackend(), load_catalogs(source_mirror))


def test_find_iocs_reads_in_pieces_and_misses_nothing_at_the_cuts(monkeypatch):
    from cybersecqwen.answering import advisory
    from cybersecqwen.answering.advisory import find_iocs

    monkeypatch.setattr(advisory, "IOC_PIECE", 1000)
    text = addresses(1500, seed=7)  # about 21 pieces of ioc-finder's input
    expected = set(re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", text))
    found = {i["value"] for i in find_iocs(text) if i["type"] == "ipv4"}
    assert found == expected


# --- 4. the client address and the request id cannot be forged --------------------------------------------------
def audit_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_forwarded_for_is_read_only_from_a_named_proxy_and_ids_are_the_servers(make_server, tmp_path):
    server = make_server()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        forged = {"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6", "x-request-id": "same-id"}
        first = http.get("/v1/models", headers=forged)
        second = http.get("/v1/models", headers=forged)
    audit = audit_lines(tmp_path / "audit.jsonl")
    assert all(r["client"] == "127.0.0.1" for r in audit)
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert [r["client_request_id"] for r in audit[-2:]] == ["same-id", "same-id"]
    assert {r["request_id"] for r in audit[-2:]} == {first.headers["x-request-id"], second.headers["x-request-id"]}


@pytest.mark.slow
def test_a_named_proxy_is_believed(make_server, tmp_path):
    server = make_server(trusted_proxies=("127.0.0.1",))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.get("/v1/models", headers={"X-Forwarded-For": "203.0.113.9"})
    assert audit_lines(tmp_path / "audit.jsonl")[-1]["client"] == "203.0.113.9"


def test_a_proxy_that_is_not_an_address_is_refused():
    from cybersecqwen.errors import CybersecqwenError
    from cybersecqwen.serve.server import check_proxies

    assert check_proxies(["10.0.0.5", "10.1.0.0/16", "::1"]) == ("10.0.0.5", "10.1.0.0/16", "::1")
    with pytest.raises(CybersecqwenError, match="--trusted-proxy '\\*'"):
        check_proxies(["*"])


# --- 3. a dropped stream stops at its next token -------------------------------------------------------------------
@pytest.mark.slow
def test_abandoned_streams_free_the_model_for_the_next_chat(make_server):
    import openai

    server = make_server(max_queue=2)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)
    story = [{"role": "user", "content": "Write a very long story about a firewall and a router."}]
    opened = 0
    for _ in range(6):
        try:
            stream = client.chat.completions.create(model="embedded", messages=story, max_tokens=1000, temperature=0.8,
                                                    stream=True)
        except openai.RateLimitError:
            continue  # the queue is full: that stream never started
        next(iter(stream))
        opened += 1
        stream.close()  # the client walks away mid-generation
    assert opened >= 1
    started = time.perf_counter()
    reply = client.chat.completions.create(model="embedded", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
    waited = time.perf_counter() - started
    assert reply.choices[0].message.content is not None
    assert waited < 5, f"the next chat waited {waited:.1f} s behind abandoned streams"  # measured: about a minute before
    depth = [line for line in httpx.get(f"{server.url}/metrics").text.splitlines() if line.startswith("cybersecqwen_queue_depth")]
    assert float(depth[0].split()[-1]) == 0


# --- 5. idle connections cannot deny service ---------------------------------------------------------------------
def metric(url: str, name: str, **labels) -> float:
    text = httpx.get(f"{url}/metrics").text
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(w in line for w in wanted))


@pytest.mark.slow
def test_seventy_idle_sockets_deny_no_one_and_are_closed_and_counted(make_server):
    server = make_server()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(70)]
    started = time.perf_counter()
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert httpx.post(f"{server.url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, timeout=30).status_code == 200
    assert time.perf_counter() - started < 5
    for sock in idle:  # each closed by the server once its first-byte deadline passes (3 s)
        assert sock.recv(1024) == b""
        sock.close()
    assert metric(server.url, "cybersecqwen_connection_refusals_total", status="none", reason="idle connection") >= 70


@pytest.mark.slow
def test_one_local_client_holding_129_sockets_locks_out_no_other_local_client(make_server, tmp_path):
    """Every local client is 127.0.0.1: a cap by address alone let one of them refuse the whole machine (129 sockets
    that sent one byte each got everyone a 503, /healthz included). Newcomers now close the oldest waiting socket."""
    from cybersecqwen.serve.server import MAX_PER_CLIENT

    server = make_server()
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(MAX_PER_CLIENT + 1)]
    for sock in held:
        sock.sendall(b"G")  # a request begun, never finished
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    answered = httpx.post(f"{server.url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, timeout=30)
    assert answered.status_code == 200
    assert held[0].recv(1024) == b""  # the oldest waiting socket made room
    for sock in held:
        sock.close()
    assert metric(server.url, "cybersecqwen_connection_refusals_total", status="none", reason="closed for a newer connection") >= 1


@pytest.mark.slow
def test_connections_over_the_cap_that_all_run_requests_get_a_503(make_server, tmp_path, monkeypatch):
    """Only when every connection of the address is running a request is the newcomer refused."""
    from cybersecqwen.serve import server as server_module

    monkeypatch.setattr(server_module, "MAX_PER_CLIENT", 2)
    server = make_server()
    running = []
    for _ in range(2):  # headers in, body still coming: the request is running
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"POST /v1/cwe/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\": ")
        running.append(sock)
    time.sleep(0.3)
    newcomer = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    refused = newcomer.recv(4096)
    for sock in (*running, newcomer):
        sock.close()
    assert refused.startswith(b"HTTP/1.1 503") and b"too many open connections" in refused
    assert metric(server.url, "cybersecqwen_connection_refusals_total", status="503") >= 1
    audit = audit_lines(tmp_path / "audit.jsonl")
    assert any(r.get("event") == "connection_refused" and r["status"] == 503 for r in audit)


def raw(port: int, request: bytes) -> tuple[bytes, bool]:
    """Send bytes as they are; (what came back, whether the server then closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                return reply, True
            reply += chunk
        head, _, rest = reply.partition(b"\r\n\r\n")
        declared = re.search(rb"(?i)content-length: (\d+)", head)
        if declared is None:  # a body that ends where the connection does
            while chunk := sock.recv(65536):
                rest += chunk
            return head + b"\r\n\r\n" + rest, True
        length = int(declared.group(1))
        while len(rest) < length:
            rest += sock.recv(65536)
        sock.settimeout(2)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        return head + b"\r\n\r\n" + rest, closed


@pytest.mark.slow
def test_malformed_http_is_answered_counted_and_audited(make_server, tmp_path):
    server = make_server()
    reply, closed = raw(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400") and closed
    assert metric(server.url, "cybersecqwen_requests_total", endpoint="connection", status="400") == 1
    assert any(r.get("event") == "connection_refused" and r["status"] == 400 for r in audit_lines(tmp_path / "audit.jsonl"))


# --- 6. the minor points ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_http_details(make_server):
    server = make_server()
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(120))  # 120 kB of headers in one write
    reply, closed = raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + padding + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 431") and b"16,384" in reply and closed
    both = (b"POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n")
    reply, closed = raw(server.port, both)
    assert reply.startswith(b"HTTP/1.1 400") and b"not both" in reply and closed
    with httpx.Client(base_url=server.url, timeout=30) as http:
        wrong = http.get("/v1/chat/completions")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        long_id = http.post("/v1/cve/map", json={"cve_id": "CVE-2024-" + "1" * 10_000, "description": "x"})
        assert long_id.status_code == 422 and len(long_id.text) < 3000


def test_readyz_names_no_model_when_none_is_loaded(tmp_path):
    from cybersecqwen.serve.app import ServerSettings, create_app

    heads_only = TestClient(create_app(None, None, ServerSettings(model_name="embedded")), base_url="http://localhost")
    assert heads_only.get("/readyz").json() == {"status": "ready", "model": None, "catalogs": False, "mode": "heads only"}
    with_model = TestClient(create_app(ScriptedBackend(), None, ServerSettings(model_name="m")), base_url="http://localhost")
    assert with_model.get("/readyz").json()["model"] == "m"


def test_requests_over_the_in_flight_limit_get_a_counted_503_but_health_answers(tmp_path):
    import threading

    from cybersecqwen.serve.app import ServerSettings, create_app

    class Slow(ScriptedBackend):
        def generate(self, requests):
            time.sleep(1.5)
            return super().generate(requests)

    app = create_app(Slow(), None, ServerSettings(model_name="m", max_in_flight=1, max_queue=8, audit_log=tmp_path / "a.jsonl"))
    http = TestClient(app, base_url="http://localhost")
    first = threading.Thread(target=lambda: http.post("/v1/chat/completions", json=CHAT))
    first.start()
    time.sleep(0.5)
    busy = http.post("/v1/chat/completions", json=CHAT)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert http.get("/healthz").status_code == 200
    first.join()
    assert 'endpoint="/v1/chat/completions",status="503"' in http.get("/metrics").text


@pytest.mark.slow
def test_the_probes_minor_findings_get_one_clear_answer_each(make_server):
    """A property named "$ref" is valid JSON Schema (it was refused with "unhashable type: 'dict'"); an empty stop
    string, logprobs and a 4,000-digit max_tokens each get one 4xx that says what to change, and never echo the input."""
    server = make_server()
    base = {**CHAT, "max_tokens": 24}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        schema = {"type": "object", "properties": {"$ref": {"type": "string", "maxLength": 12}}, "required": ["$ref"]}
        reply = http.post("/v1/chat/completions", json={**base, "response_format": {
            "type": "json_schema", "json_schema": {"name": "ref", "schema": schema}}})
        assert reply.status_code == 200, reply.text
        assert list(json.loads(reply.json()["choices"][0]["message"]["content"])) == ["$ref"]
        empty = http.post("/v1/chat/completions", json={**base, "stop": ["", "\n"]})
        assert empty.status_code == 400 and "empty string" in empty.json()["error"]["message"]
        for field, value in (("logprobs", True), ("top_logprobs", 3)):
            refused = http.post("/v1/chat/completions", json={**base, field: value})
            assert refused.status_code == 400 and "logprobs" in refused.json()["error"]["message"]
        huge = http.post("/v1/chat/completions", json={**base, "max_tokens": 10**4000})
        assert huge.status_code == 422 and len(huge.text) < 400 and "4,001 digits" in huge.text
        assert http.post("/v1/chat/completions", json=base).status_code == 200  # still answering
