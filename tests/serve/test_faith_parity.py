"""Gaps Cisco's FAITH found against our server (issue 17): max_completion_tokens, fresh randomness without a seed."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_max_completion_tokens_is_honoured_and_the_smaller_limit_wins(make_server):
    from openai import OpenAI

    client = OpenAI(base_url=make_server().url + "/v1", api_key="unused")
    question = [{"role": "user", "content": "Explain in detail how a SQL injection attack works, step by step."}]
    new_name = client.chat.completions.create(model="embedded", messages=question, max_completion_tokens=5, temperature=0)
    assert new_name.usage.completion_tokens <= 6 and new_name.choices[0].finish_reason == "length"
    old_name = client.chat.completions.create(model="embedded", messages=question, max_tokens=5, temperature=0)
    assert old_name.choices[0].message.content == new_name.choices[0].message.content
    both = client.chat.completions.create(model="embedded", messages=question, max_tokens=40, max_completion_tokens=3, temperature=0)
    assert both.usage.completion_tokens <= 4


def test_sampling_without_a_seed_differs_and_with_a_seed_repeats(make_server):
    from openai import OpenAI

    client = OpenAI(base_url=make_server().url + "/v1", api_key="unused")
    question = [{"role": "user", "content": "Name one cyber threat actor and one technique it uses."}]

    def sample(**seed) -> str:
        return client.chat.completions.create(model="embedded", messages=question, max_tokens=24, temperature=1.0,
                                              **seed).choices[0].message.content

    unseeded = {sample() for _ in range(4)}
    assert len(unseeded) > 1  # four "independent" trials are not one sample repeated
    assert sample(seed=7) == sample(seed=7)
