"""What one advisory costs: every finder linear in its text over adversarial inputs, and stopped by the request's
deadline inside its loop (the server's 504 then comes on time and frees the model lock). The seconds themselves are in
BENCHMARKS.md ("Advisory analysis: adversarial texts"); these tests compare two sizes of the same text."""

from __future__ import annotations

import time

import pytest

from cybersecqwen.answering import advisory, attack, references, stated
from cybersecqwen.answering.deadline import DeadlinePassed, set_deadline
from tests.heads.conftest import heads_corpus, trained_heads  # noqa: F401 - fixtures
from tests.serve.test_advisory import service  # noqa: F401 - fixture
from tests.serve.test_promises import source_mirror  # noqa: F401

# Runs of one character or one short unit: the shapes that made regex finders quadratic (brackets, quotes, dots,
# slashes, digits, spaces), and units that every finder reads (ids, vectors, indicators, labels, headings).
UNITS = ["[", "(", '"', ".", "/", "1", "a ", "a.", "1.", "x[.]", "T1059 ", "CVE-2024-1234 CWE-79 ",
         "AV:N/", "Vendor: Acme\n", "Indicators:\n", "APT28 "]


def best_of(runs: int, job) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        job()
        times.append(time.perf_counter() - started)
    return min(times)


def growth(job, text_of, small: int, large: int) -> float:
    """How many times longer the large text takes than the small one (linear: large / small)."""
    job(text_of(small))  # warm: ioc-finder builds its grammars on first use
    return best_of(3, lambda: job(text_of(large))) / max(best_of(3, lambda: job(text_of(small))), 1e-3)


@pytest.mark.parametrize("unit", UNITS)
def test_the_indicator_finder_is_linear_in_runs_of_any_character(unit):
    """20,000 "[" took 26 s (ioc-finder's refanging patterns, quadratic in a run of brackets): 4x the text now costs
    about 4x the time, never the 16x of a quadratic finder. Both sizes fit one of ioc-finder's pieces (IOC_PIECE)."""
    ratio = growth(advisory.find_iocs, lambda n: (unit * (n // len(unit) + 1))[:n], 5_000, 20_000)
    assert ratio < 9, f"{unit!r}: 4x the text took {ratio:.1f}x the time"


@pytest.mark.parametrize("unit", UNITS)
def test_the_whole_analysis_is_linear_in_runs_of_any_character(service, unit):  # noqa: F811
    ratio = growth(lambda text: advisory.analyze(service, text), lambda n: (unit * (n // len(unit) + 1))[:n], 4_000, 16_000)
    assert ratio < 9, f"{unit!r}: 4x the text took {ratio:.1f}x the time"


# Many distinct values: costs that grew with values x text (a sentence or a URL looked up per value). Each value's own
# evidence span is still one search of the text (values x text, bounded by the 2,000-indicator cap; BENCHMARKS.md).
LISTS = {
    "headed urls": lambda n: "\n".join(f"Indicators:\nhttp://a{i}.example.com/x" for i in range(n)),
    "cves beside cwes": lambda n: " ".join(f"CVE-2024-{10000 + i} CWE-{i % 900 + 1}" for i in range(n)),
}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_lists_of_distinct_values_cost_linear_time(name):
    def job(text):
        found = advisory.find_iocs(text)
        references.split(found, text)
        stated.per_cve(text, stated.cwe_ids(text, {}, {}), [])

    ratio = growth(job, LISTS[name], 250, 1_000)
    assert ratio < 9, f"{name}: 4x the values took {ratio:.1f}x the time"


FINDERS = {
    "indicators": (advisory.find_iocs, "see 203.0.113[.]45 and hxxp://bad[.]example/x " * 50),
    "indicator split": (lambda t: references.split([{"type": "ipv4", "value": "203.0.113.45", "evidence": [4, 16],
                                                     "flags": [], "defanged": False}], t), "see 203.0.113.45 " * 50),
    "cves": (advisory.find_cves, "CVE-2024-1234 " * 50),
    "cwe ids": (lambda t: stated.cwe_ids(t, {}, {}), "CWE-79 " * 50),
    "vectors": (stated.vectors, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H " * 50),
    "per cve": (lambda t: stated.per_cve(t, [], []), "CVE-2024-1234 " * 50),
    "vendor fields": (stated.affected_lines, "Vendor: Acme\nProducts: Portal 1.2\n" * 50),
    "sentences": (advisory.sentences, "One. Two. " * 50),
}


def stops_at_a_passed_deadline(finder, text: str) -> None:
    set_deadline(time.monotonic() - 1)
    try:
        with pytest.raises(DeadlinePassed):
            finder(text)
    finally:
        set_deadline(None)


@pytest.mark.parametrize("name", sorted(FINDERS))
def test_a_passed_deadline_stops_every_finder_inside_its_loop(name):
    finder, text = FINDERS[name]
    stops_at_a_passed_deadline(finder, text)
    finder(text)  # without a deadline the same text is read whole


def test_a_passed_deadline_stops_the_catalog_finders_and_the_analysis(service):  # noqa: F811
    text = "APT28 used T1059 against Acme Portal 2.1 (CVE-2024-1234). " * 20
    for finder in (lambda t: attack.stated(service.catalogs, t), lambda t: advisory.find_actors(service, t),
                   lambda t: advisory.analyze(service, t)):
        stops_at_a_passed_deadline(finder, text)
