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


def scored_row(difference: float, p_value: float, modes: dict) -> dict:
    model = {"value": 0.3, "ci95": [0.28, 0.32], "n_items": 2500, "parse_failure_rate": 0.0, "baseline": 0.37,
             "verdict": "does NOT clear the trivial baseline"}
    return {"metric": "accuracy", "higher_is_better": True, "n_items": 2500, "trivial_baseline": 0.37, "trivial_answer": "C",
            "modes": modes, "models": {"base": model, "tuned": model},
            "tuned_vs_base": {"difference_b_minus_a": difference, "ci95": [difference - 0.01, difference + 0.01],
                              "p_value": p_value, "test": "mcnemar"}}


def test_the_scorecard_says_whether_training_taught_the_task_and_how_it_was_scored():
    from cybersecqwen.scorecard import markdown

    budget = {"train_examples": 6000, "rows_per_step": 4, "optimizer_steps": 90, "examples_seen": 360, "tokens_seen": 83900,
              "epochs": 0.06, "plan": {"optimizer_steps": 90, "epochs": 0.06, "set_by": "train.max_steps"}}
    card = {"recipe": "r", "train": {"steps": 90, "budget": budget}, "stages": {},
            "protocols": {"ctibench": {"cti-mcq": scored_row(0.09, 1e-30, {"base": "logprob", "tuned": "logprob"}),
                                       "cti-rcm": scored_row(0.01, 0.6, {"base": "generate", "tuned": "generate"})}}}
    text = markdown(card, "cybersecqwen serve ...")
    assert "**What the tuned model trained**: 360 examples (0.06 epochs of 6,000)" in text and "smoke-scale run" in text
    assert "Scored for every model by log-probabilities of the choices" in text
    assert "the tuned model beats its base (paired p = 1e-30); tuned does NOT clear the trivial baseline" in text
    assert "the tuned model does NOT significantly differ from its base (paired p = 0.6)" in text
    mixed = markdown({**card, "protocols": {"ctibench": {"cti-mcq": scored_row(0.0, 1.0, {"base": "generate", "tuned": "logprob"})}}}, "")
    assert "Scored in DIFFERENT modes (not comparable)" in mixed


def test_the_learning_curve_is_a_table_and_a_panel_of_the_figure(tmp_path):
    from cybersecqwen.scorecard import markdown, plot

    curve = [{"step": s, "epoch": s / 100, "mcq_accuracy": a, "rcm_accuracy": r, "val_loss": l, "items": {"cti-mcq": 40, "cti-rcm": 40}}
             for s, a, r, l in ((0, 0.25, 0.0, 3.1), (50, 0.30, 0.1, 2.2), (100, 0.35, None, 1.9))]
    card = {"recipe": "r", "stages": {}, "protocols": {}, "curve": curve}
    text = markdown(card, "")
    assert "## Learning curve (corpus validation)" in text and "40 MCQ and 40 RCM validation examples" in text
    assert "| 50 | 0.50 | 30.0% | 10.0% | 2.200 |" in text and "| 100 | 1.00 | 35.0% | n/a | 1.900 |" in text
    plot(card, tmp_path / "card.png")
    assert (tmp_path / "card.png").stat().st_size > 5_000
    assert "Learning curve" not in markdown({**card, "curve": []}, "")
