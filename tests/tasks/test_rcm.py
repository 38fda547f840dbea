import pytest

from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.base import Answer, Item
from cybersecqwen.tasks.rcm import robust_cwe_ids

rcm = get_task("cti-rcm")


@pytest.mark.parametrize(
    "response, rules, cwe",
    [
        ("Could be CWE-20, but it is a use after free.\nCWE-416", "ctibench", "CWE-416"),
        ("This maps to CWE-79 (XSS). Not CWE-89.", "ctibench", "CWE-89"),  # the release: the last match wins
        ("cwe-79", "ctibench", None),  # case-sensitive "CWE-"
        ("This maps to CWE-79.\n\nCWE-79", "cisco", "CWE-79"),  # equal matches are unique
        ("CWE-79 or CWE-89", "cisco", None),  # differing ids: no proper answer, no fallback
        ("The CWE: 787 applies", "cisco", "CWE-787"),  # improper fallback
        ("**CWE‑787** (non-breaking hyphen)", "robust", "CWE-787"),
        ("Root cause: out-of-bounds write.\n\nFinal answer: CWE 787\n", "robust", "CWE-787"),
        ("It is CWE-79 (Cross-site Scripting), not CWE-89.\n\n**CWE-79**", "robust", "CWE-79"),
        ("I cannot determine the weakness.", "robust", None),
    ],
)
def test_cwe_extraction(response, rules, cwe):
    assert rcm.extract(response, rules).value == cwe


def test_robust_ranking_prefers_the_last_line_then_statements():
    text = "Candidates: CWE-20, CWE-20, CWE-787. The root cause is CWE-416.\nCWE-416"
    assert robust_cwe_ids(text)[:2] == ["CWE-416", "CWE-20"]


def test_cisco_drops_duplicate_rows_and_reshapes_description():
    assert 243 in rcm.skipped_indexes("cisco") and not rcm.skipped_indexes("ctibench")
    item = Item(5, "p", "CWE-79", {"Description": "First part.  Second part.   Third"})
    text = rcm.messages(item, "cisco")[0]["content"]
    assert text.endswith("CVE Description: First part.\n\nSecond part.\n\nThird")


def test_accuracy_over_valid_and_strict():
    items = [Item(0, "", "CWE-79"), Item(1, "", "CWE-89"), Item(2, "", "CWE-416")]
    answers = [Answer("CWE-79", "proper"), Answer(None, "invalid"), Answer("CWE-20", "proper")]
    rows = [rcm.stats(i, a) for i, a in zip(items, answers)]
    metrics = rcm.metrics({k: sum(r[k] for r in rows) for k in rows[0]}, "ctibench")
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["strict_accuracy"] == pytest.approx(1 / 3)
    assert (metrics["n"], metrics["valid"], metrics["invalid"]) == (3, 2, 1)


def test_trivial_baseline_on_real_key(mirror):
    items = rcm.load(mirror)
    answer = rcm.trivial_answer(items)
    assert answer.value == "CWE-79"
    assert sum(rcm.stats(i, answer)["correct"] for i in items) / len(items) == pytest.approx(0.229, abs=0.0005)


@pytest.mark.parametrize("response, expected", [
    ("CWE\u201179 ... so the answer is CWE-79", ("CWE-79", "proper")),  # FAITH normalises U+2011, then compares
    ("CWE-79\nCWE\u201179", ("CWE-79", "proper")),
    ("CWE\u201179 or CWE-89", (None, "invalid")),  # still two different ids
    ("The weakness is CWE\u201379.", (None, "invalid")),  # an en dash is not FAITH's CWE form at all
    ("Final: CWE\u221279", (None, "invalid")),  # nor a minus sign
])
def test_cisco_rules_normalise_the_non_breaking_hyphen_before_comparing(response, expected):
    answer = rcm.extract(response, "cisco")
    assert (answer.value, answer.kind) == expected
