"""`serve --heads DIR --no-model` and `enrich --no-model`: the structured endpoints from the heads alone."""

from __future__ import annotations

import json

import httpx
import pytest

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.serve.app import ServerSettings
from cybersecqwen.serve.server import build_app
from tests.serve.conftest import LiveServer


def test_heads_only_server_answers_structured_requests_and_refuses_chat(trained_heads, source_mirror):
    app, backend = build_app("embedded", "auto", ServerSettings(), data_dir=source_mirror, heads=trained_heads, no_model=True)
    assert backend is None
    with LiveServer(app) as server:
        reply = httpx.post(f"{server.url}/v1/cwe/classify", json={"text": "SQL injection via the id parameter of the login query"})
        assert reply.status_code == 200
        body = reply.json()
        assert body["candidates"][0]["cwe_id"] == "CWE-89" and body["candidates"][0]["components"]["head"] > 0.5
        assert "heads only" in body["method"]
        mapped = httpx.post(f"{server.url}/v1/cve/map", json={"cve_id": "CVE-2024-0001",
                                                             "description": "A remote unauthenticated attacker can compromise it over the network"})
        assert mapped.json()["cvss"]["vector"].startswith("CVSS:3.1/AV:N/")
        chat = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 503 and "--no-model" in chat.json()["error"]["message"]


def test_no_model_needs_heads(source_mirror):
    with pytest.raises(CybersecqwenError, match="pass --heads"):
        build_app("embedded", "auto", ServerSettings(), data_dir=source_mirror, no_model=True)


def test_enrich_with_heads_alone(trained_heads, source_mirror, tmp_path):
    from cybersecqwen.answering.enrich import enrich_file

    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("\n".join(json.dumps({"id": i, "description": text}) for i, text in enumerate(
        ["Path traversal lets attackers read arbitrary files via ../ sequences", "heap buffer overflow in the image parser"])) + "\n")
    counts = enrich_file("embedded", "auto", alerts, tmp_path / "out.jsonl", "description", "cwe", data_dir=source_mirror,
                         heads=trained_heads, no_model=True)
    assert counts["enriched"] == 2
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["cybersecqwen"]["candidates"][0]["cwe_id"] for r in rows] == ["CWE-22", "CWE-787"]
