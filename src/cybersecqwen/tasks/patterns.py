"""Declared answer patterns, scored the way Cisco's FAITH scores them.

A pattern table is a list of rows (regex, how to transform the capture, how to disambiguate several
matches, proper or improper). The first row is the proper format; the rest are fallbacks. The first row
that yields an answer wins. Disambiguation, as FAITH defines it:
- `unique`: every match must transform to the same value (several equal matches are fine);
- `singular`: exactly one match;
- `first` / `last`: take that match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal

Kind = Literal["proper", "improper"]
Disambiguation = Literal["unique", "singular", "first", "last"]


@dataclass(frozen=True)
class AnswerPattern:
    regex: str
    kind: Kind
    disambiguation: Disambiguation = "unique"
    transform: Callable[[str], str] = str.upper

    def match(self, text: str) -> str | None:
        captures = re.findall(self.regex, text)
        if not captures:
            return None
        values = [self.transform(c if isinstance(c, str) else c[0]) for c in captures]
        if len(values) == 1 or self.disambiguation == "first":
            return values[0]
        if self.disambiguation == "last":
            return values[-1]
        if self.disambiguation == "unique" and len(set(values)) == 1:
            return values[0]
        return None


def first_match(text: str, table: list[AnswerPattern]) -> tuple[str | None, str]:
    """(answer, kind) from the first row of `table` that yields one; (None, "invalid") otherwise."""
    for pattern in table:
        value = pattern.match(text)
        if value is not None:
            return value, pattern.kind
    return None, "invalid"


def last_nonempty_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def strip_markdown(text: str) -> str:
    """Remove emphasis and code marks that models wrap answers in (`**B**`, `__B__`, `` `B` ``)."""
    return re.sub(r"[*_`#]+", "", text)


def normalise_dashes(text: str) -> str:
    # Models (and copied NVD text) write CWE‑79 with non-breaking or en dashes.
    return re.sub(r"[\u2010\u2011\u2012\u2013\u2014\u2212]", "-", text)


REFUSAL = re.compile(
    r"(?i)\b(i\s+(?:cannot|can't|can not|am unable to|'m unable to|won't)|i'?m sorry|i am sorry|as an ai\b|"
    r"unable to (?:answer|determine|provide|identify)|not enough information|insufficient information)"
)


def is_refusal(text: str) -> bool:
    return not text.strip() or REFUSAL.search(text) is not None
