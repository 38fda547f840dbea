"""NameFinder finds what one regex alternation of the names finds, trying only words that start a name."""

from __future__ import annotations

import re

from hypothesis import given, settings, strategies as st

from cybersecqwen.names import NameFinder

NAMES = ["Acme Portal", "Acme", "node.js", "APT28", "Fancy Bear", "C++ Builder", ".NET Framework", "Bear", "a-b"]


def reference(names, text, left=r"(?<![\w-])", right=r"(?![\w-])"):
    alternation = "|".join(re.escape(n) for n in sorted(set(names), key=lambda n: (-len(n), n)))
    return [(m.start(), m.end()) for m in re.finditer(f"{left}(?:{alternation}){right}", text, re.IGNORECASE)]


def spans(finder, text):
    return [(m.start(), m.end()) for m in finder.finditer(text)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(NAMES + ["x", " ", "-", ".", "\n", "acme", "PORTAL", "bear", "(", "28"]), max_size=30))
def test_the_same_hits_as_one_alternation(pieces):
    text = "".join(pieces)
    assert spans(NameFinder(NAMES), text) == reference(NAMES, text)
    actors = NameFinder(NAMES, left="(?<![A-Za-z0-9])", right="(?![A-Za-z0-9])")
    assert spans(actors, text) == reference(NAMES, text, "(?<![A-Za-z0-9])", "(?![A-Za-z0-9])")


def test_longest_name_first_and_flexible_spaces():
    finder = NameFinder(["Acme", "Acme Portal"], left="", flexible_spaces=True)
    assert [m.group(0) for m in finder.finditer("in ACME  Portal and acme\tportal, then Acme.")] == \
        ["ACME  Portal", "acme\tportal", "Acme"]


def test_work_is_the_words_that_start_a_name_not_names_times_text():
    finder = NameFinder([f"Product{i} Suite" for i in range(5000)] + ["Acme Portal"])
    for text in ('"' * 200_000, "[" * 200_000, "a" * 200_000):
        calls = []
        assert list(finder.finditer(text, lambda: calls.append(1))) == [] and calls == []
    calls = []
    text = "Acme Portal and Acme Widget " * 1000
    assert len(list(finder.finditer(text, lambda: calls.append(1)))) == 1000
    assert len(calls) == 2000  # one try per word "Acme", none for the other 3,000 words
