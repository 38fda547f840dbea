"""The task contract: every registered task can be built and scored, and what the server scores is the start of
the answer the corpus trains (so serving and training cannot drift apart)."""

from __future__ import annotations

import json

from cybersecqwen.config import load_recipe
from cybersecqwen.corpus.build import build_corpus
from cybersecqwen.corpus.builders import BUILDERS
from cybersecqwen.tasks import TASKS, get_task
from cybersecqwen.tasks.base import INVALID, Item


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


def test_every_served_prefix_starts_the_answer_the_corpus_trains(source_mirror, recipe_file, tmp_path):
    from cybersecqwen.serve.catalog import load_catalogs
    from cybersecqwen.serve.service import CtiService

    build_corpus(load_recipe(recipe_file), tmp_path / "corpus", source_mirror)
    examples = [json.loads(line) for split in ("train", "val")
                for line in (tmp_path / "corpus" / f"{split}.jsonl").read_text().splitlines()]
    backend = TeacherBackend()
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
            assert answer.rsplit("\n", 1)[-1] in get_task("cti-mcq").choices  # the trained letter ends the answer
            checked[name] += 1
            continue
        else:
            continue
        for request in requests:
            if name != "cti-ate":  # ATE serves its shortlist as the technique list, not all 216 techniques
                assert request.messages == prompt, name
            # The choice the trained answer makes is among those served, right after the served prefix.
            assert any(answer.startswith(request.prefix + choice) for choice in request.choices), (name, request.prefix, answer)
        checked[name] += 1
    assert all(checked.values()), checked
