"""A published number stands beside a measured one only when it was produced the same way."""

from __future__ import annotations

import pytest

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.evaluate.references import describe, load_references, placed

GPT4 = {"model": "GPT-4", "protocol": "ctibench", "mode": "generate", "trials": 1, "temperature": 0.0, "items": "whole",
        "source": "Table 1", "scores": {"cti-mcq": {"accuracy": 0.71}, "cti-ate": {"macro_f1": 0.639}}}


def settings(**changes):
    base = {"protocol": "ctibench", "mode": "generate", "trials": 1, "temperature": 0.0, "n_items": 2500, "whole_file": True,
            "n_file_rows": 2500, "metrics": {"accuracy": 0.5, "micro_f1": 0.4, "macro_f1": 0.3}}
    return {**base, **changes}


def test_same_protocol_mode_trials_temperature_items_and_metric_is_comparable():
    comparable, other = placed([GPT4], "cti-mcq", [settings()])
    assert other == [] and describe(comparable[0]) == "GPT-4 accuracy 71.0% (this run: 50.0%)"


def test_every_difference_is_named():
    run = settings(mode="logprob", trials=1, n_items=100, whole_file=False)
    _, other = placed([GPT4], "cti-mcq", [run])
    assert describe(other[0]) == "GPT-4 accuracy 71.0% (logprob vs generate; 100 of 2,500 items)"
    _, other = placed([{**GPT4, "protocol": "cisco", "trials": 10, "temperature": 0.3}], "cti-mcq", [settings()])
    assert other[0]["reasons"] == ["protocol cisco vs ctibench", "1 vs 10 trials", "T=0 vs T=0.3"]


def test_ate_is_compared_on_the_metric_the_paper_published():
    comparable, _ = placed([GPT4], "cti-ate", [settings()])
    assert comparable[0]["metric"] == "macro_f1" and comparable[0]["ours"] == [0.3]
    _, other = placed([GPT4], "cti-ate", [settings(metrics={"micro_f1": 0.4})])
    assert other[0]["reasons"] == ["macro_f1 not measured by this run"]


def test_a_reference_without_its_settings_or_metric_is_refused(tmp_path):
    path = tmp_path / "refs.yaml"
    path.write_text("references:\n  - {model: X, protocol: ctibench, scores: {cti-mcq: 0.7}}\n")
    with pytest.raises(CybersecqwenError, match="lacks items, mode, temperature, trials"):
        load_references(path)
    path.write_text("references:\n  - {model: X, protocol: ctibench, mode: generate, trials: 1, temperature: 0, items: whole, "
                    "scores: {cti-mcq: 0.7}}\n")
    with pytest.raises(CybersecqwenError, match=r"write \{metric: value\}"):
        load_references(path)


def test_the_shipped_references_load_and_name_their_metrics():
    entries = load_references(__import__("pathlib").Path("configs/references.yaml"))
    assert {metric for e in entries for scores in e["scores"].values() for metric in scores} >= {"accuracy", "macro_f1", "mad"}
