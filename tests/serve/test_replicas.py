"""Issue 28.3: `serve` replicas share nothing a load balancer would break: readiness separate from liveness, the same
answers from two processes, one audit log per process, and SIGTERM finishes the running requests before exiting 0.
Replicas run heads-only (`--no-model`) on the fixture catalogs and heads: what is tested is the process, not a model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.heads.conftest import heads_corpus, trained_heads  # noqa: F401 - fixtures
from tests.serve.conftest import free_port
from tests.serve.test_promises import source_mirror  # noqa: F401


def test_readiness_is_503_until_the_app_is_loaded_and_liveness_answers_throughout():
    from cybersecqwen.serve.app import ServerSettings
    from cybersecqwen.serve.server import Starting

    starting = Starting(ServerSettings(model_name="embedded"))
    client = TestClient(starting)
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "loading" and ready.headers["retry-after"] == "5"
    busy = client.post("/v1/cwe/classify", json={"text": "x"})
    assert busy.status_code == 503 and "loading" in busy.json()["error"]["message"]
    starting.failed = "missing data file mitre-cwe/cwec_v4.14.xml"
    assert client.get("/readyz").json() == {"status": "failed", "error": "missing data file mitre-cwe/cwec_v4.14.xml"}

    async def loaded(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"real app"})

    starting.app = loaded
    assert client.get("/readyz").text == "real app"  # from now on every request reaches the loaded app


def start_replica(heads: Path, mirror: Path, port: int, audit: Path) -> subprocess.Popen:
    env = {**os.environ, "CYBERSECQWEN_DATA_DIR": str(mirror), "CYBERSECQWEN_ALLOW_UNPINNED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cybersecqwen", "serve", "--no-model", "--heads", str(heads), "--port", str(port),
                             "--audit-log", str(audit), "--timeout", "60"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_ready(port: int, process: subprocess.Popen, seconds: float = 120) -> list[int]:
    """Poll until /readyz is 200; the readiness codes seen on the way."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"replica exited {process.returncode}: {process.stdout.read().decode()[-2000:]}")
        try:
            code = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            seen.append(code)
            if code == 200:
                return seen
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"replica on {port} not ready after {seconds} s")


@pytest.mark.slow
def test_two_replicas_answer_alike_log_apart_and_drain_on_sigterm(trained_heads, source_mirror, tmp_path):  # noqa: F811
    ports = [free_port(), free_port()]
    audit = tmp_path / "audit-{pid}.jsonl"
    replicas = [start_replica(trained_heads, source_mirror, port, audit) for port in ports]
    try:
        for port, replica in zip(ports, replicas):
            seen = wait_ready(port, replica)
            assert set(seen) <= {200, 503}
        report = "The implant beacons to its C2 server over HTTPS and lists files and directories on the host."
        answers = []
        for port in ports:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                answers.append((http.post("/v1/attack/extract", json={"text": report}).json()["techniques"],
                                http.post("/v1/cwe/classify", json={"text": "SQL injection in the login form."}).json()["candidates"]))
        assert answers[0] == answers[1]  # no state of one replica changes the other's answers
        logs = sorted(tmp_path.glob("audit-*.jsonl"))
        assert [p.name for p in logs] == sorted(f"audit-{r.pid}.jsonl" for r in replicas)  # one file per process
        for log in logs:  # each replica's own two answers (and its own health checks), nothing of the other's
            assert [json.loads(line)["endpoint"] for line in log.read_text().splitlines()
                    if json.loads(line)["endpoint"].startswith("/v1/")] == ["/v1/attack/extract", "/v1/cwe/classify"]

        # SIGTERM while 8 requests run: all 8 answered, then exit 0.
        document = ("CVE-2024-0001: SQL injection in the login form lets remote attackers run commands. " * 150)
        results: list[int] = []

        def ask() -> None:
            reply = httpx.post(f"http://127.0.0.1:{ports[0]}/v1/advisory/analyze", json={"text": document}, timeout=120)
            results.append(reply.status_code)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # all 8 sent and queued or running
        replicas[0].send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=120)
        assert results == [200] * 8
        assert replicas[0].wait(timeout=60) == 0
        audited = [json.loads(line) for line in logs[[p.name for p in logs].index(f"audit-{replicas[0].pid}.jsonl")].read_text().splitlines()]
        assert sum(r["endpoint"] == "/v1/advisory/analyze" and r["status"] == 200 for r in audited) == 8
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.kill()
                replica.wait()
