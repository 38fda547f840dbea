import pytest

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.tasks import TASK_NAMES, get_task, parse_task_list
from cybersecqwen.tasks.base import Answer, Item


@pytest.mark.parametrize("response, cwe, kind", [
    ('{"cwe_id": "CWE-79", "name": "XSS", "justification": "script in pages"}', "CWE-79", "proper"),
    ('Sure!\n```json\n{"cwe_id": "cwe-089", "name": "SQLi", "justification": "x"}\n```', "CWE-89", "proper"),
    ("Not JSON, but the weakness is CWE-787.", "CWE-787", "improper"),
    ("No idea.", None, "invalid"),
])
def test_cwe_classify_reads_json_first(response, cwe, kind):
    answer = get_task("cwe-classify").extract(response, "robust")
    assert (answer.value, answer.kind) == (cwe, kind)


def test_cti_qa_token_f1():
    qa = get_task("cti-qa")
    item = Item(0, "", "T1059 is Command and Scripting Interpreter")
    stats = qa.stats(item, Answer("Command and Scripting Interpreter, T1059", "proper"))
    assert stats["token_f1"] == pytest.approx(2 * 5 / (5 + 6))  # all but "is"
    half = qa.stats(item, Answer("T1059 Interpreter", "proper"))["token_f1"]
    assert half == pytest.approx(2 * 2 / (2 + 6))


def test_serving_tasks_are_not_benchmarks():
    assert "cwe-classify" not in TASK_NAMES and "cwe-classify" not in parse_task_list("all")
    with pytest.raises(CybersecqwenError, match="no benchmark file"):
        get_task("cti-qa").load()
