import pytest

from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.base import Answer, Item

ate = get_task("cti-ate")


@pytest.mark.parametrize(
    "response, rules, ids",
    [
        ("T1071: HTTP C2.\nT1070.001 clears logs.\nT1071, T1070", "ctibench", {"T1071", "T1070"}),
        ("Reasoning with T1071.\nT1059.003, T1105", "ctibench", {"T1059", "T1105"}),  # sub-techniques fold
        ("Uses T1071.\nNo ids on this last line", "ctibench", None),
        ("**Answer:** t1071, T1070\n\nHope this helps!", "robust", {"T1071", "T1070"}),
        ("Uses T1071.\nNo ids on this last line", "robust", {"T1071"}),
    ],
)
def test_technique_extraction(response, rules, ids):
    value = ate.extract(response, rules).value
    assert (set(value) if value else None) == ids


def test_micro_and_macro_f1_hand_computed():
    items = [Item(0, "", frozenset({"T1071", "T1070"})), Item(1, "", frozenset({"T1083"})), Item(2, "", frozenset({"T1059"}))]
    answers = [Answer(frozenset({"T1071", "T1105"}), "proper"), Answer(frozenset({"T1083"}), "proper"), Answer(None, "invalid")]
    rows = [ate.stats(i, a) for i, a in zip(items, answers)]
    metrics = ate.metrics({k: sum(r[k] for r in rows) for k in rows[0]}, "ctibench")
    # valid items: tp=2, fp=1, fn=1 -> P=2/3, R=2/3, F1=2/3; item F1s 0.5 and 1.0
    assert metrics["micro_precision"] == pytest.approx(2 / 3)
    assert metrics["micro_f1"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx(0.75)
    # strict: the invalid item misses its one gold technique
    assert metrics["strict_micro_f1"] == pytest.approx(4 / (4 + 1 + 2))
    assert metrics["strict_macro_f1"] == pytest.approx(1.5 / 3)
