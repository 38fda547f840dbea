"""The scorecard's honesty checks: answer bias is separated from knowledge; the trivial-baseline verdict."""

from __future__ import annotations

import pytest

from cybersecqwen.scorecard import answer_chance, format_vs_knowledge, verdict


def records(answers: list[str | None], gold: list[str]) -> dict[int, list[dict]]:
    return {i: [{"answer": a, "kind": "invalid" if a is None else "proper", "stats": {"correct": float(a == g), "valid": float(a is not None)}}]
            for i, (a, g) in enumerate(zip(answers, gold))}


def test_always_the_majority_letter_is_answer_bias_not_knowledge():
    gold = ["C"] * 6 + ["A", "B", "D", "A"]
    always_c = records(["C"] * 10, gold)
    assert answer_chance(always_c, dict(enumerate(gold))) == 0.6  # exactly its accuracy: zero knowledge
    knows = records(gold, gold)  # right every time, same answer distribution as the key
    # Same answer distribution as the key (C 60%, A 20%, B 10%, D 10%): .6^2 + .2^2 + .1^2 + .1^2 = 0.42 by chance.
    assert answer_chance(knows, dict(enumerate(gold))) == pytest.approx(0.42)


def test_parse_failures_are_formatting_and_shared_items_measure_knowledge():
    gold = ["A", "B", "C", "D"]
    base = records([None, None, "C", "A"], gold)
    tuned = records(["A", "C", "C", "A"], gold)
    split = format_vs_knowledge("cti-mcq", base, tuned, dict(enumerate(gold)))
    assert split["parse_failures_base"] == 0.5 and split["parse_failures_tuned"] == 0.0
    assert split["both_parseable"] == 2 and split["accuracy_base_on_both"] == split["accuracy_tuned_on_both"] == 0.5
    assert split["tuned_most_common_answer"] in ("A", "C")


def test_verdict_needs_the_whole_interval_above_the_baseline():
    assert verdict({"value": 0.40, "ci95": [0.30, 0.50], "baseline": 0.371}, True) == "does NOT clear the trivial baseline"
    assert verdict({"value": 0.50, "ci95": [0.40, 0.60], "baseline": 0.371}, True) == "clears the trivial baseline"
    assert verdict({"value": 1.0, "ci95": [0.8, 1.2], "baseline": 1.5}, False) == "clears the trivial baseline"
