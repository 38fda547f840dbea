"""The task contract: every registered task can be built and scored; the answer the corpus trains parses back to its
gold answer under every rule set; and what choice scoring scores (in evaluation and in the server) is the start of
that trained answer, token for token, or the task's answer form declares choice scoring invalid and it is refused
(so training, evaluation and serving cannot drift apart)."""

from __future__ import annotations

import json
import re

import pytest

from cybersecqwen.config import load_recipe
from cybersecqwen.corpus import builders
from cybersecqwen.corpus.build import build_corpus
from cybersecqwen.corpus.builders import BUILDERS
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.tasks import TASKS, get_task
from cybersecqwen.tasks.base import INVALID, Item
from cybersecqwen.tasks.mcq import ANSWER_FORMS, MCQ


def test_every_registered_task_has_a_corpus_builder_and_a_scorer(fixture_mirror):
    for name, task_class in TASKS.items():
        task = get_task(name)
        assert (task.trained_as or name) in BUILDERS, f"task {name} has no corpus builder"
        assert task_class.trained_as is None or task_class.trained_as in TASKS
        # A scorer: statistics of an unparseable answer add up to metrics that hold the headline metric.
        item = task.load(fixture_mirror)[0] if task.file_name else Item(0, "", "x")
        stats = task.stats(item, INVALID)
        assert stats["n"] == 1 and stats["valid"] == 0
        metrics = task.metrics(stats, "robust")
        assert task.primary_metric in metrics and metrics["parse_failure_rate"] == 1.0
        assert task.item_text_fields, f"task {name} declares no item text (decontamination needs it)"


class TeacherBackend:
    """Prefers the choice that continues the trained answer (so CVSS metrics are served in sequence), and remembers
    every request the service sends."""

    def __init__(self) -> None:
        self.requests, self.answer = [], ""

    def score_choices(self, requests):
        self.requests += requests
        return [[0.0 if self.answer.startswith(r.prefix + c) else -10.0 for c in r.choices] for r in requests]


def embedded_tokenization():
    """The HF backend's own tokenization of a scored request (chat template, then the scored text), without weights."""
    from transformers import AutoTokenizer

    from cybersecqwen.models import hf_folder
    from cybersecqwen.models.hf import HFBackend

    backend = HFBackend.__new__(HFBackend)
    backend.tokenizer = AutoTokenizer.from_pretrained(hf_folder("embedded", "test"))
    backend.is_instruct = True
    return backend


@pytest.mark.slow
def test_every_served_prefix_starts_the_answer_the_corpus_trains(source_mirror, recipe_file, tmp_path, embedded_available):
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService

    build_corpus(load_recipe(recipe_file), tmp_path / "corpus", source_mirror)
    examples = [json.loads(line) for split in ("train", "val")
                for line in (tmp_path / "corpus" / f"{split}.jsonl").read_text().splitlines()]
    backend, tokens = TeacherBackend(), embedded_tokenization()
    service = CtiService(backend, load_catalogs(source_mirror), shortlist=50)
    checked = {"cti-rcm": 0, "cwe-classify": 0, "cti-ate": 0, "cti-vsp": 0, "cti-mcq": 0}
    for example in examples:
        name, prompt, answer = example["task"], example["messages"][:-1], example["messages"][-1]["content"]
        text = prompt[-1]["content"]
        backend.requests, backend.answer = [], answer
        if name == "cti-rcm":
            description = text.split("CVE Description: ", 1)[1][:-1]
            service.map_cve("CVE-2099-0001", description)
            requests = [backend.requests[0]]  # the CWE choice; the CVSS metrics follow
        elif name == "cti-vsp":
            service.cvss_vector(text.split("CVE Description: ", 1)[1][:-1])
            requests = backend.requests
        elif name == "cwe-classify":
            service.classify_cwe(text.split("Text: ", 1)[1])
            requests = backend.requests
        elif name == "cti-ate":
            service.extract_attack(text.split("**Text:** ", 1)[1].split("  **List of All MITRE", 1)[0])
            requests = backend.requests
        elif name == "cti-mcq":
            question, options = re.fullmatch(r".*\*\*Question:\*\* (.*)  \*\*Options:\*\* (A\) .*)  \*\*Important.*", text,
                                             re.DOTALL).groups()
            service.ask(question, re.split(r" ?\b[B-D]\) ", options.removeprefix("A) ")))
            requests = backend.requests
        else:
            continue
        for request in requests:
            if name != "cti-ate":  # ATE serves its shortlist as the technique list, not all 216 techniques
                assert request.messages == prompt, name
            # The choice the trained answer makes is among those served, right after the served prefix ...
            assert any(answer.startswith(request.prefix + choice) for choice in request.choices), (name, request.prefix, answer)
            # ... token for token, as the backend scores it after the trained prompt and the trainer tokenizes it.
            choice = next(c for c in request.choices if answer.startswith(request.prefix + c))
            scored = tokens.request_ids(example["messages"][:-1], None, request.prefix + choice)
            trained_ids = token_ids(tokens.tokenizer, tokens.tokenizer.apply_chat_template(example["messages"], tokenize=False))
            assert trained_ids[: len(scored)] == scored, (name, request.prefix + choice)
        checked[name] += 1
    assert all(checked.values()), checked


@pytest.fixture
def trained(source_mirror, recipe_file, tmp_path, monkeypatch):
    """Every example the corpus builds, with the facts its answer was written from: (task, fields, facts, example)."""
    recorded = []
    make_example = builders.make_example

    def spy(task_name, source, source_id, fields, **facts):
        example = make_example(task_name, source, source_id, fields, **facts)
        if example is not None:
            recorded.append((task_name, fields, facts, example))
        return example

    monkeypatch.setattr(builders, "make_example", spy)
    build_corpus(load_recipe(recipe_file), tmp_path / "corpus", source_mirror)
    return recorded


def rule_sets_of(task):
    from cybersecqwen.evaluate.runner import rule_sets

    return rule_sets(task)


def test_every_trained_answer_parses_back_to_its_gold_answer_under_every_rule_set(trained, fixture_mirror):
    by_task = {}
    for name, fields, facts, example in trained:
        by_task.setdefault(name, []).append((fields, facts, example))
    for name in TASKS:
        task = get_task(name)
        if task.file_name:
            task.load(fixture_mirror)  # tasks that score against a graph (TAA's aliases) read it with their file
        examples = by_task.get(task.trained_as or name, [])
        assert examples, f"the corpus trains no {name} answer"
        perfect = 1.0 if task.higher_is_better else 0.0
        for fields, facts, example in examples:
            prompt, answer = example.messages[-2][1], example.messages[-1][1]
            item = Item(-1, prompt, task.answer_value(**facts), fields)
            for rules in rule_sets_of(task):
                parsed = task.extract(answer, rules)
                stats = task.stats(item, parsed)
                # The same answer: equal names (TAA's release rules credit a name only through its alias graph, a quirk
                # kept on purpose), or a perfect score (ATE's technique sets, VSP's vectors, free-text F1).
                same = (isinstance(parsed.value, str) and isinstance(item.gold, str)
                        and parsed.value.strip().lower() == item.gold.strip().lower())
                assert stats["valid"] == 1.0 and (same or task.paired_value(stats) == perfect), (name, rules, answer, item.gold, parsed)


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_choice_mode_scores_the_start_of_the_trained_answer_token_for_token(trained, embedded_available):
    """Every task with choices, every protocol the corpus trains (the release's prompts): the scored prefix + the gold
    choice is a prefix of the trained answer's tokens under the embedded tokenizer, as the trainer and the backend
    tokenize them; or the task's answer form declares choice scoring invalid and evaluation refuses it."""
    backend = embedded_tokenization()
    checked = 0
    for name, fields, facts, example in trained:
        task = get_task(name)
        if not task.choices:
            continue
        messages = [{"role": r, "content": c} for r, c in example.messages]
        prefix = task.choice_prefix("ctibench")
        if prefix is None:
            assert task.choice_mode_refusal("ctibench"), name
            continue
        scored = backend.request_ids(messages[:-1], None, prefix + task.answer_form.choice_text(task.answer_value(**facts)))
        trained_ids = token_ids(backend.tokenizer, backend.tokenizer.apply_chat_template(messages, tokenize=False))
        assert trained_ids[: len(scored)] == scored, (name, messages[-1]["content"])
        checked += 1
    assert checked


@pytest.mark.parametrize("form", sorted(ANSWER_FORMS))
def test_each_mcq_answer_form_either_starts_with_its_choice_or_refuses_choice_scoring(form, monkeypatch, fixture_mirror,
                                                                                       tmp_path):
    monkeypatch.setattr(MCQ, "answer_form", ANSWER_FORMS[form])
    task = get_task("cti-mcq")
    answer = task.render_answer(fact="SQL Injection is CAPEC-66.", letter="C")
    prefix = task.choice_prefix("ctibench")
    if prefix is not None:
        assert answer.startswith(prefix + "C") and task.choice_mode_refusal("ctibench") is None
        return
    refusal = task.choice_mode_refusal("ctibench")
    assert not answer.startswith("C") and "cti-mcq" in refusal and "logprob" in refusal and f"'{form}'" in refusal
    # The eval and a recipe asking for that mode are refused with that line, before any model loads.
    from cybersecqwen.evaluate.runner import EvalConfig, plan_eval

    with pytest.raises(CybersecqwenError, match=f"task cti-mcq: mode logprob is not valid for answer form '{form}'"):
        plan_eval(EvalConfig(model="embedded", tasks={"cti-mcq": 5}, out=tmp_path / "eval", mode="logprob",
                             data_dir=fixture_mirror))
    from cybersecqwen.config import EvalSettings

    with pytest.raises(ValueError, match=f"'{form}'"):
        EvalSettings(tasks="cti-mcq", protocols=["ctibench"], mode="logprob")
    assert task.choice_prefix("cisco") == "Answer: "  # FAITH's prompt dictates its own form
