"""CTI-MCQ rules, read like the benchmark's: which letter each rule set takes from a response."""

import pytest

from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.base import Answer, Item

mcq = get_task("cti-mcq")


@pytest.mark.parametrize(
    "response, letter",
    [
        ("B", "B"),
        ("The answer is\nC) Rootkit", "C"),  # last line starts with "C)"
        ("Reasoning...\nD\n", "D"),  # empty last line: the one before counts
        ("Reasoning...\n**A**", "A"),  # ends with ** -> third character from the end
        ("I think the best option is B.", None),  # ends with "." : the release's rule finds nothing
        ("B\n\n\n", None),  # two trailing blank lines: only one is skipped
        ("I'm sorry, I cannot help with that.", "X"),  # refusal coded X (valid, never correct)
        ("", "X"),
    ],
)
def test_ctibench_rules(response, letter):
    assert mcq.extract(response, "ctibench").value == letter


@pytest.mark.parametrize(
    "response, letter, kind",
    [
        ("Answer: B", "B", "proper"),
        ("answer : (c)", "C", "proper"),
        ("Answer: B\nAnswer: B", "B", "proper"),  # equal matches are unique
        ("Answer: B ... Answer: C", None, "invalid"),  # disagreeing proper matches; no fallback matches either
        ("The answer is **D**", "D", "improper"),
        ("I pick (A).", "A", "improper"),
        ("(A) or (B)", None, "invalid"),  # singular fallback needs exactly one
        ("Option C looks right", "C", "improper"),
        (" d. ", "D", "improper"),  # the single-letter response
        ("Execution\nB", None, "invalid"),  # single-letter rule is not multiline
    ],
)
def test_cisco_faith_patterns(response, letter, kind):
    answer = mcq.extract(response, "cisco")
    assert (answer.value, answer.kind) == (letter, kind)


@pytest.mark.parametrize(
    "response, letter",
    [
        ("**Answer: C) Rootkit**", "C"),
        ("The correct answer is B.\n\nExplanation follows.", "B"),
        ("Let me think.\n\n**C**\n\n", "C"),
        ("A)\nB)\nThe best option is (D)", "D"),
        ("B. Execution Prevention", "B"),
    ],
)
def test_robust_rules(response, letter):
    assert mcq.extract(response, "robust").value == letter


def _totals(items, answers):
    rows = [mcq.stats(i, a) for i, a in zip(items, answers)]
    return {k: sum(r[k] for r in rows) for k in rows[0]}


def test_accuracy_denominators_hand_computed():
    items = [Item(i, "", gold) for i, gold in enumerate("ABCD")]
    answers = [Answer("A", "proper"), Answer("C", "improper"), Answer(None, "invalid"), Answer("D", "proper")]
    ctibench = mcq.metrics(_totals(items, answers), "ctibench")
    assert ctibench["accuracy"] == pytest.approx(2 / 3)  # correct over valid answers
    assert ctibench["strict_accuracy"] == pytest.approx(2 / 4)  # over all items
    assert ctibench["parse_failure_rate"] == pytest.approx(1 / 4)
    answers[1] = Answer("B", "improper")
    cisco = mcq.metrics(_totals(items, answers), "cisco")
    assert cisco["accuracy"] == pytest.approx(2 / 4)  # proper format only
    assert cisco["lenient_accuracy"] == pytest.approx(3 / 4)


def test_cisco_prompt_follows_faith_and_its_na_quirk(fixture_mirror):
    items = mcq.load(fixture_mirror)
    prompt = mcq.messages(items[2], "cisco")
    assert [m["role"] for m in prompt] == ["user"]  # no system prompt under Cisco's protocol
    text = prompt[0]["content"]
    assert text.startswith("Given the following question and four candidate answers (A, B, C and D)")
    assert "What does MFA mitigate?\n\nA. None\nB. Brute Force\nC. Rootkit\nD. Defacement" in text
    ctibench = mcq.messages(items[2], "ctibench")
    assert ctibench[0] == {"role": "system", "content": "You are a cybersecurity expert specializing in cyberthreat intelligence."}
    assert ctibench[1]["content"] == items[2].prompt


def test_trivial_baseline_on_real_key(mirror):
    items = mcq.load(mirror)
    answer = mcq.trivial_answer(items)
    assert answer.value == "C"
    rows = [mcq.stats(i, answer) for i in items]
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(0.371, abs=0.0005)
