"""CTI-ATE: extract the ATT&CK techniques a text describes. Metrics: precision, recall, F1 (micro, macro).

Sub-techniques are folded into their parent (T1059.003 -> T1059): the prompt asks for main techniques only.
The release published no scoring code: its paper names micro-F1 in the text and macro-F1 in its table, so
both are reported.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping

from cybersecqwen.tasks.base import INVALID, Answer, AnswerForm, Item, Task, ratio, validity
from cybersecqwen.tasks.patterns import strip_markdown
from cybersecqwen.tasks.registry import register

TECHNIQUE_ID = re.compile(r"\b(T\d{4})(?:\.\d{3})?\b")
ROBUST_TECHNIQUE_ID = re.compile(r"(?i)\b(T\d{4})(?:\.\d{3})?\b")
ANSWER_LINE = re.compile(r"(?im)^\W*(?:final\s+)?answer\s*:(.*)$")


CTIBENCH_INSTRUCTION = (
    "Extract all MITRE {platform} attack patterns from the following text and map them to their corresponding "
    "MITRE technique IDs. Provide reasoning for each identification. Ensure the final line contains only the IDs "
    "for the main techniques, separated by commas, excluding any subtechnique IDs. MITRE {platform} IDs are given "
    "below as reference.  **Text:** "
)


def technique_list(techniques: list[tuple[str, str]], platform: str = "Enterprise") -> str:
    """The release's reference block: "**List of All MITRE <platform> technique IDs** ID    : Name T1548 : ..."."""
    rows = " ".join(f"{technique_id} : {name}" for technique_id, name in techniques)
    return f"  **List of All MITRE {platform} technique IDs** ID    : Name {rows}     "


def technique_ids(text: str, pattern: re.Pattern[str] = TECHNIQUE_ID) -> tuple[str, ...]:
    return tuple(dict.fromkeys(match.upper() for match in pattern.findall(text)))


@register
class ATE(Task):
    name = "cti-ate"
    file_name = "cti-ate.tsv"
    columns = ("URL", "Platform", "Description", "Prompt", "GT")
    primary_metric = "micro_f1"
    protocols = ("ctibench",)
    item_text_fields = ("Description",)
    # One line per technique (id, name, the quoted evidence), then the ids alone on the last line; the server scores
    # each line's "<T-id> (<name>):" after "- " (the colon belongs to the choice: "):" is one token, see rcm.py).
    answer_form = AnswerForm("technique-lines-then-ids", '- {choice} "{evidence}"', choice="{value} ({label}):")

    def make_item(self, index: int, row: Mapping[str, str]) -> Item:
        return Item(index, row["Prompt"], frozenset(technique_ids(row["GT"])), dict(row))

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        """Needs fields Platform, Description and TechniqueList (see technique_list: built from ATT&CK)."""
        return CTIBENCH_INSTRUCTION.format(platform=fields["Platform"]) + fields["Description"] + fields["TechniqueList"]

    def item_text(self, prompt: str) -> str:
        text = prompt.split("**Text:** ", 1)[-1]
        return text.split("  **List of All MITRE ", 1)[0]

    def render_answer(self, evidence: Mapping[str, str], names: Mapping[str, str]) -> str:
        ids = sorted(evidence)
        lines = [self.answer_form.render(t, names.get(t, "technique"), evidence=evidence[t]) for t in ids]
        return "\n".join(lines) + "\n\n" + ", ".join(ids)

    def answer_value(self, evidence: Mapping[str, str], names: Mapping[str, str]) -> frozenset[str]:
        return frozenset(t.split(".")[0] for t in evidence)

    def extract(self, response: str, rules: str) -> Answer:
        if rules == "robust":
            text = strip_markdown(response)
            answer_lines = ANSWER_LINE.findall(text)
            for candidate in reversed(answer_lines):
                ids = technique_ids(candidate, ROBUST_TECHNIQUE_ID)
                if ids:
                    return Answer(frozenset(ids), "proper")
            for line in reversed(text.splitlines()):
                ids = technique_ids(line, ROBUST_TECHNIQUE_ID)
                if ids:
                    return Answer(frozenset(ids), "proper")
            return INVALID
        # The prompt's rule: the final (non-empty) line holds the main technique ids, comma separated.
        lines = [line for line in response.splitlines() if line.strip()]
        ids = technique_ids(lines[-1]) if lines else ()
        return Answer(frozenset(ids), "proper") if ids else INVALID

    def stats(self, item: Item, answer: Answer) -> dict[str, float]:
        gold: frozenset[str] = item.gold
        if not answer.valid:
            return {"n": 1.0, "valid": 0.0, "tp": 0.0, "fp": 0.0, "fn": 0.0, "fn_invalid": float(len(gold)),
                    "item_f1": 0.0}
        predicted: frozenset[str] = answer.value
        tp = len(predicted & gold)
        fp = len(predicted - gold)
        fn = len(gold - predicted)
        item_f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
        return {"n": 1.0, "valid": 1.0, "tp": float(tp), "fp": float(fp), "fn": float(fn), "fn_invalid": 0.0,
                "item_f1": item_f1}

    def metrics(self, totals: Mapping[str, Any], rules: str) -> dict[str, Any]:
        n, valid = totals["n"], totals["valid"]
        tp, fp, fn = totals["tp"], totals["fp"], totals["fn"]
        fn_all = fn + totals["fn_invalid"]
        return {
            **validity(totals),
            "micro_precision": ratio(tp, tp + fp),
            "micro_recall": ratio(tp, tp + fn),
            "micro_f1": ratio(2 * tp, 2 * tp + fp + fn),
            "macro_f1": ratio(totals["item_f1"], valid),
            # Strict: an unparseable response is an empty prediction (all its gold techniques missed).
            "strict_micro_f1": ratio(2 * tp, 2 * tp + fp + fn_all),
            "strict_macro_f1": ratio(totals["item_f1"], n),
        }

    def paired_value(self, stats: Mapping[str, float]) -> float:
        return stats["item_f1"]

    def is_binary(self) -> bool:
        return False

    def trivial_answer(self, items: list[Item]) -> Answer:
        counts = Counter(technique for item in items for technique in item.gold)
        return Answer(frozenset([counts.most_common(1)[0][0]]), "proper")

    def official_metric_names(self, rules: str) -> list[str]:
        return ["micro_f1", "macro_f1"]
