"""Names from a fixed list (products, threat actors) found in text in time linear in the text.

One regex alternation of thousands of escaped names is tried, name by name, at every position of the text: a
200,000-character advisory of quotes cost seconds in one C call that holds the GIL (the server's timeout could not
answer meanwhile) and no deadline check could run inside it. Here the names are grouped by their first word: the
text's words are found once, and only a word that starts some name is tried, against the small alternation of the
names it starts. What is found is what the one alternation finds: case-insensitive, whole names only (the `left`
and `right` guards), leftmost, the longest name at a position first, hits not overlapping.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Iterator

WORD = re.compile(r"\w+")


class NameFinder:
    def __init__(self, names: Iterable[str], left: str = r"(?<![\w-])", right: str = r"(?![\w-])",
                 flexible_spaces: bool = False) -> None:
        """`left`/`right`: lookarounds a hit must satisfy; `flexible_spaces`: a space in a name matches any run of
        whitespace in the text."""
        ordered = sorted({n for n in names if n}, key=lambda n: (-len(n), n))
        buckets: dict[str, list[str]] = {}
        rest: list[str] = []
        for name in ordered:
            word = WORD.match(name)
            (buckets.setdefault(word.group(0).lower(), []) if word else rest).append(name)

        def alternation(group: list[str]) -> re.Pattern:
            escaped = (re.escape(n).replace(r"\ ", r"\s+") if flexible_spaces else re.escape(n) for n in group)
            return re.compile(f"{left}(?:{'|'.join(escaped)}){right}", re.IGNORECASE)

        self.buckets = {word: alternation(group) for word, group in buckets.items()}
        self.rest = alternation(rest) if rest else None  # names that start with no word character: few
        self.size = len(ordered)

    def finditer(self, text: str, tick: Callable[[], None] | None = None) -> Iterator[re.Match]:
        """The hits in text order. `tick` is called once per word tried (a deadline check)."""
        hits = []
        for word in WORD.finditer(text):
            pattern = self.buckets.get(word.group(0).lower())
            if pattern is None:
                continue
            if tick:
                tick()
            hit = pattern.match(text, word.start())
            if hit:
                hits.append(hit)
        if self.rest is not None:
            for hit in self.rest.finditer(text):
                if tick:
                    tick()
                hits.append(hit)
        end = -1
        for hit in sorted(hits, key=lambda h: (h.start(), -h.end())):
            if hit.start() >= end:
                end = hit.end()
                yield hit

    def search(self, text: str) -> re.Match | None:
        return next(self.finditer(text), None)
