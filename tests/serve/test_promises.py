"""Promises the docs make that no test held (issue 13): Retry-After on 429, the X-API-Key header, json_object
reaching the backend, the refusal to bind beyond loopback without a key, --log-content, `data stats`, `data sources`.
A scripted backend stands in for the model: these are properties of the server and the CLI, not of a model."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.models.base import BackendBase, BackendInfo
from cybersecqwen.serve.app import ServerSettings, create_app
from cybersecqwen.serve.server import check_binding
from tests.corpus.conftest import recipe_file, source_mirror  # noqa: F401 - fixtures


class ScriptedBackend(BackendBase):
    is_instruct = True
    info = BackendInfo("scripted", "scripted")

    def __init__(self) -> None:
        self.requests = []

    def generate(self, requests):
        self.requests += requests
        return ['{"ok": true}' for _ in requests]

    def score_choices(self, requests):
        return [[0.0] * len(r.choices) for r in requests]

    def close(self) -> None:
        pass


CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def client(tmp_path, **settings) -> tuple[TestClient, ScriptedBackend]:
    backend = ScriptedBackend()
    app = create_app(backend, None, ServerSettings(model_name="scripted", audit_log=tmp_path / "audit.jsonl", **settings))
    return TestClient(app, base_url="http://localhost"), backend


def test_full_queue_answers_429_with_retry_after(tmp_path):
    http, _ = client(tmp_path, max_queue=0)
    reply = http.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "1"
    assert reply.json()["error"]["type"] == "rate_limit_error"


def test_x_api_key_header_is_accepted_like_bearer(tmp_path):
    http, _ = client(tmp_path, api_key="s3cret")
    assert http.post("/v1/chat/completions", json=CHAT, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert http.post("/v1/chat/completions", json=CHAT, headers={"X-API-Key": "wrong"}).status_code == 401
    assert http.get("/healthz").status_code == 200  # health stays public


def test_json_object_reaches_the_backend_as_any_json_object(tmp_path):
    http, backend = client(tmp_path)
    reply = http.post("/v1/chat/completions", json={**CHAT, "response_format": {"type": "json_object"}})
    assert reply.status_code == 200 and backend.requests[-1].json_schema == "{}"
    assert json.loads(reply.json()["choices"][0]["message"]["content"]) == {"ok": True}


def test_binding_beyond_loopback_needs_a_key():
    with pytest.raises(CybersecqwenError, match="set an API key"):
        check_binding("0.0.0.0", None)
    check_binding("0.0.0.0", "k")
    check_binding("127.0.0.1", None)
    check_binding("localhost", None)


@pytest.mark.parametrize("log_content", [False, True])
def test_audit_log_holds_content_only_when_asked(tmp_path, log_content):
    http, _ = client(tmp_path, log_content=log_content)
    http.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "secret report text"}]})
    record = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert record["endpoint"] == "/v1/chat/completions" and record["status"] == 200
    assert ("content" in record) is log_content
    assert ("secret report text" in (tmp_path / "audit.jsonl").read_text()) is log_content


def test_data_stats_and_data_sources(source_mirror, recipe_file, tmp_path):
    from cybersecqwen.cli import app
    from cybersecqwen.config import load_recipe
    from cybersecqwen.corpus.build import build_corpus

    build_corpus(load_recipe(recipe_file), tmp_path / "corpus", source_mirror)
    runner = CliRunner()
    stats = runner.invoke(app, ["data", "stats", str(tmp_path / "corpus")])
    assert stats.exit_code == 0 and "cti-rcm" in stats.output and "train" in stats.output
    not_corpus = runner.invoke(app, ["data", "stats", str(tmp_path)])
    assert isinstance(not_corpus.exception, CybersecqwenError) and "no manifest.json" in str(not_corpus.exception)
    sources = runner.invoke(app, ["data", "sources", "--data-dir", str(source_mirror)])
    assert sources.exit_code == 0
    assert "cti-bench" in sources.output and "ok" in sources.output and "missing" in sources.output

