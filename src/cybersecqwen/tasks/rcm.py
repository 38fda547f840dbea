"""CTI-RCM and CTI-RCM-2021: map a CVE description to its root-cause CWE. Metric: accuracy."""

from __future__ import annotations

import re
from collections import Counter
from typing import Mapping

from cybersecqwen.tasks.base import INVALID, AccuracyTask, Answer, AnswerForm, Item
from cybersecqwen.tasks.patterns import (
    AnswerPattern,
    first_match,
    last_nonempty_line,
    normalise_dashes,
    strip_markdown,
)
from cybersecqwen.tasks.registry import register

CISCO_INSTRUCTION = (
    "Analyze the following CVE description and map it to the appropriate CWE. Provide a brief justification "
    "for your choice. Ensure the last line of your response contains only the CWE ID."
)

CISCO_PATTERNS = [
    # FAITH turns the non-breaking hyphen (U+2011) into "-" before checking that all matches agree.
    AnswerPattern(r"(?i)\b(cwe[‑-]\d+)\b", "proper", "unique", lambda x: x.replace("‑", "-").upper()),
    AnswerPattern(r"(?i)\b(?:cwe|id):\s+(\d+)\b", "improper", "unique", lambda x: f"CWE-{x}"),
]

CWE_ID = re.compile(r"(?i)\bCWE[\s_-]?(\d+)\b")
CWE_STATEMENT = re.compile(
    r"(?i)(?:answer|cwe\s*id|maps?\s+to|mapped\s+to|classified\s+as|root\s+cause\s+is|appropriate\s+cwe\s+is)"
    r"\s*(?:is)?\s*[:\-]?\s*\(?CWE[\s_-]?(\d+)\b"
)

# FAITH v0.3.0+ drops duplicate descriptions (0-based TSV rows), see PROTOCOLS.md.
CISCO_DUPLICATE_ROWS = frozenset([243, 453, 531, 600, 602, 681, 689, 691, 776, 788])


def robust_cwe_ids(response: str) -> list[str]:
    """All CWE ids a response names, ranked: last-line id first, explicit statements, then by frequency."""
    text = normalise_dashes(strip_markdown(response))
    mentions = [f"CWE-{int(m)}" for m in CWE_ID.findall(text)]
    if not mentions:
        return []
    ranked: list[str] = []
    last_line = [f"CWE-{int(m)}" for m in CWE_ID.findall(last_nonempty_line(text))]
    if len(set(last_line)) == 1:
        ranked.append(last_line[0])
    ranked.extend(f"CWE-{int(m)}" for m in reversed(CWE_STATEMENT.findall(text)))
    counts = Counter(mentions)
    ranked.extend(sorted(counts, key=lambda cwe: (-counts[cwe], mentions.index(cwe))))
    return list(dict.fromkeys(ranked))


@register
class RCM(AccuracyTask):
    name = "cti-rcm"
    file_name = "cti-rcm.tsv"
    columns = ("URL", "Description", "Prompt", "GT")
    primary_metric = "accuracy"
    item_text_fields = ("Description",)
    # The weakness named with its id and explained, then the id alone on the last line (the release's rule reads the
    # last CWE id; the server scores "<name> (<CWE>):" after the opening words). The colon belongs to the choice: the
    # tokenizer merges ")" and ":" into one token, so a choice ending at ")" would not be a token prefix of the answer.
    answer_form = AnswerForm("named-weakness-then-id", "The weakness behind this vulnerability is {choice} {explanation}\n\n{value}",
                             choice="{label} ({value}):")

    def make_item(self, index: int, row: Mapping[str, str]) -> Item:
        return Item(index, row["Prompt"], row["GT"].strip().upper(), dict(row))

    def skipped_indexes(self, protocol: str) -> frozenset[int]:
        return CISCO_DUPLICATE_ROWS if protocol == "cisco" and self.name == "cti-rcm" else frozenset()

    base_instruction = "The following is a CVE description. Map it to the appropriate CWE ID."

    def base_question(self, item: Item) -> str:
        return self.cisco_prompt(item).removeprefix(CISCO_INSTRUCTION + "\n\n")

    def base_answer(self, item: Item) -> str:
        return item.gold  # FAITH's RCM examples end in the bare id

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        # The release's prompt is the instruction, two spaces, the description and one trailing space.
        return f"{CISCO_INSTRUCTION}  CVE Description: {fields['Description']} "

    def render_answer(self, cwe_id: str, name: str, explanation: str) -> str:
        return self.answer_form.render(cwe_id, name, explanation=explanation)

    def answer_value(self, cwe_id: str, name: str, explanation: str) -> str:
        return cwe_id

    def cisco_prompt(self, item: Item) -> str:
        description = item.fields["Description"].strip()
        if self.name == "cti-rcm" and item.index == 391:
            # FAITH special-cases this row: its words are separated by runs of spaces.
            description = description.replace("      ", " ").replace("  ", " ")
        else:
            # FAITH turns runs of two or more spaces (not after '*') into paragraph breaks.
            description = re.sub(r"([^*])  (?: )*", "\\1\n\n", description)
        return CISCO_INSTRUCTION + "\n\nCVE Description: " + description

    def extract(self, response: str, rules: str) -> Answer:
        if rules == "ctibench":
            ids = re.findall(r"CWE-\d+", response)
            return Answer(ids[-1], "proper") if ids else INVALID
        if rules == "cisco":
            value, kind = first_match(response, CISCO_PATTERNS)
            return Answer(value, kind) if value is not None else INVALID
        ranked = robust_cwe_ids(response)
        return Answer(ranked[0], "proper") if ranked else INVALID


@register
class RCM2021(RCM):
    """The 2021 CVEs of the first CTI-Bench release: same prompt, same rules (no FAITH duplicate list)."""

    name = "cti-rcm-2021"
    file_name = "cti-rcm-2021.tsv"
    trained_as = "cti-rcm"
