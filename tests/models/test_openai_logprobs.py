"""Choice scoring through an OpenAI-compatible upstream (issue 13): whitespace variants of a token add up, and a
question whose choices all fall outside the upstream's top log-probabilities is a parse failure, never "A"."""

from __future__ import annotations

import math
from types import SimpleNamespace

from cybersecqwen.evaluate.runner import EvalPlan, _ask
from cybersecqwen.evaluate.scoring import Response, answer_of
from cybersecqwen.models.base import ChoiceRequest
from cybersecqwen.models.openai import OpenAIBackend
from cybersecqwen.tasks import Item, get_task


def fake_reply(pairs):
    entries = [SimpleNamespace(token=token, logprob=logprob) for token, logprob in pairs]
    content = [SimpleNamespace(top_logprobs=entries)]
    return SimpleNamespace(choices=[SimpleNamespace(logprobs=SimpleNamespace(content=content))])


def test_whitespace_variants_combine_by_log_sum_exp():
    backend = OpenAIBackend("http://127.0.0.1:9/v1#model")
    real_client = backend.client
    backend.client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(
        create=lambda **kwargs: fake_reply([(" B", math.log(0.3)), ("B", math.log(0.2)), ("A", math.log(0.4))]))),
        close=real_client.close)
    scores = backend.score_choices([ChoiceRequest([{"role": "user", "content": "?"}], ("A", "B", "C", "D"))])[0]
    assert math.isclose(math.exp(scores[1]), 0.5) and math.isclose(math.exp(scores[0]), 0.4)
    assert scores[2] == scores[3] == -math.inf
    backend.close()


def test_all_choices_unscored_is_a_parse_failure_not_a_letter():
    task = get_task("cti-mcq")
    item = Item(0, "Q?", "A", {"Question": "Q?", "Option A": "a", "Option B": "b", "Option C": "c", "Option D": "d"})
    backend = SimpleNamespace(is_instruct=True, info=SimpleNamespace(model="m"),
                              score_choices=lambda requests: [[-math.inf] * 4 for _ in requests])
    plan = SimpleNamespace(cfg=SimpleNamespace(protocol="ctibench", mode="logprob", seed=42), model=object(), pools={})
    [record] = _ask(backend, plan, task, [(item, 0)])
    assert record["choice"] is None and "failure" in record
    answer = answer_of(task, Response(0, 0, record["response"], record["choice"]), "ctibench")
    assert not answer.valid and answer.kind == "invalid"
    assert EvalPlan  # the runner's plan type the fake stands in for
