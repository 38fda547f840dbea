import pytest

from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.base import Item
from cybersecqwen.tasks.vsp import base_score

vsp = get_task("cti-vsp")
GOLD = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8


def test_base_scores_from_the_cvss_library():
    assert base_score(GOLD) == 9.8
    assert base_score("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H") == 5.5
    assert base_score("CVSS:3.0/AV:X/AC:L") is None


@pytest.mark.parametrize(
    "response, rules, vector",
    [
        ("Vector: AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "ctibench", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "ctibench", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        ("av:n/ac:l/pr:n/ui:n/s:u/c:h/i:h/a:h", "ctibench", None),  # the release's pattern is upper case
        ("AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "ctibench", None),  # matched but not a valid vector
        ("`cvss:3.1/av:n/ac:l/pr:n/ui:n/s:u/c:h/i:h/a:h`", "robust", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        ("AV:L/AC:H/PR:H/UI:R/S:C/C:L/I:L/A:N", "robust", "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:C/C:L/I:L/A:N"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "cisco", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        ("base metrics /AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "cisco", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
    ],
)
def test_vector_extraction(response, rules, vector):
    assert vsp.extract(response, rules).value == vector


def test_mad_over_parseable_and_strict_with_max_deviation():
    items = [Item(0, "", GOLD), Item(1, "", GOLD), Item(2, "", GOLD)]
    responses = ["AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H", "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "no idea"]
    rows = [vsp.stats(i, vsp.extract(r, "ctibench")) for i, r in zip(items, responses)]
    totals = {k: sum(r[k] for r in rows) for k in rows[0]}
    metrics = vsp.metrics(totals, "ctibench")
    assert metrics["mad"] == pytest.approx((9.8 - 5.5 + 0) / 2)
    assert metrics["strict_mad"] == pytest.approx((4.3 + 0 + 10) / 3)
    assert vsp.metrics(totals, "cisco")["score"] == pytest.approx(1 - (14.3 / 3) / 10)
