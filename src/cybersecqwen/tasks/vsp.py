"""CTI-VSP: predict the CVSS v3.1 base vector of a CVE. Metric: mean absolute deviation of base scores."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping

from cvss import CVSS3
from cvss.exceptions import CVSSError

from cybersecqwen.tasks.base import INVALID, Answer, Item, Task, ratio, validity
from cybersecqwen.tasks.patterns import AnswerPattern, first_match
from cybersecqwen.tasks.rcm import CISCO_DUPLICATE_ROWS as _RCM_DUPLICATES
from cybersecqwen.tasks.registry import register


# The eight CVSS 3.1 base metrics in vector order: name and value labels (the vocabulary of answers and serving).
CVSS_METRICS = {
    "AV": ("Attack Vector", {"N": "Network", "A": "Adjacent", "L": "Local", "P": "Physical"}),
    "AC": ("Attack Complexity", {"L": "Low", "H": "High"}),
    "PR": ("Privileges Required", {"N": "None", "L": "Low", "H": "High"}),
    "UI": ("User Interaction", {"N": "None", "R": "Required"}),
    "S": ("Scope", {"U": "Unchanged", "C": "Changed"}),
    "C": ("Confidentiality", {"N": "None", "L": "Low", "H": "High"}),
    "I": ("Integrity", {"N": "None", "L": "Low", "H": "High"}),
    "A": ("Availability", {"N": "None", "L": "Low", "H": "High"}),
}
# "- **Attack Vector (AV)**: Network (N), Adjacent (A), Local (L), Physical (P)", one line per metric: both prompts list them.
OPTION_LINES = [f"- **{name} ({key})**: " + ", ".join(f"{label} ({code})" for code, label in values.items())
                for key, (name, values) in CVSS_METRICS.items()]
EXAMPLE_VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
CISCO_INSTRUCTION = (
    "From the following CVE description, determine the CVSS v3.1 vector string for each CVSS base metric: AV, AC, PR, "
    "UI, S, C, I, and A.\nValid options for each metric are as follows:\n" + "\n".join(OPTION_LINES) + "\nProvide your "
    "answer as a CVSS v3.1 vector string. Ensure your final answer contains only the CVSS v3 Vector String in the "
    f"following example format:\n{EXAMPLE_VECTOR}"
)
# The release's Prompt column: the same options, its own wording, newlines flattened to spaces.
CTIBENCH_INSTRUCTION = (
    "Analyze the following CVE description and calculate the CVSS v3.1 Base Score. Determine the values for each "
    "base metric: AV, AC, PR, UI, S, C, I, and A. Summarize each metric's value and provide the final CVSS v3.1 "
    "vector string.   Valid options for each metric are as follows: " + " ".join(OPTION_LINES) + "  Summarize each "
    "metric's value and provide the final CVSS v3.1 vector string. Ensure the final line of your response contains "
    f"only the CVSS v3 Vector String in the following format:  Example format: {EXAMPLE_VECTOR}  CVE Description: "
)

CISCO_PATTERNS = [
    AnswerPattern(r"(?i)(cvss:3\.\d(?:/\w+:\w+)+)\b", "proper", "unique", lambda x: x.strip().upper()),
    AnswerPattern(r"(?i)((?:/\w+:\w+){2,})\b", "improper", "unique", lambda x: "CVSS:3.0" + x.strip().upper()),
]
# FAITH drops the RCM duplicates plus two rows that only repeat in VSP.
CISCO_DUPLICATE_ROWS = _RCM_DUPLICATES | {419, 763}

CTIBENCH_VECTOR = re.compile(r"AV:[A-Z]/AC:[A-Z]/PR:[A-Z]/UI:[A-Z]/S:[A-Z]/C:[A-Z]/I:[A-Z]/A:[A-Z]")
ROBUST_VECTOR = re.compile(
    r"(?i)(?:CVSS:3\.[01]/)?AV:[NALP]/AC:[LH]/PR:[NLH]/UI:[NR]/S:[UC]/C:[NLH]/I:[NLH]/A:[NLH]\b"
)
# Cisco scores a malformed or missing vector as the largest possible deviation.
MAX_DEVIATION = 10.0


@lru_cache(maxsize=8192)
def base_score(vector: str) -> float | None:
    try:
        return float(CVSS3(vector).scores()[0])
    except (CVSSError, ValueError, KeyError, IndexError):
        return None


def metric_prefix(key: str) -> str:
    """The start of one metric's line in the trained answer; the server scores the value after it."""
    return f"- {CVSS_METRICS[key][0]} ({key}): "


def metric_choice(key: str, code: str) -> str:
    return f"{CVSS_METRICS[key][1][code]} ({code})"


@register
class VSP(Task):
    name = "cti-vsp"
    file_name = "cti-vsp.tsv"
    columns = ("URL", "Description", "Prompt", "GT")
    primary_metric = "mad"
    higher_is_better = False
    item_text_fields = ("Description",)

    def make_item(self, index: int, row: Mapping[str, str]) -> Item:
        return Item(index, row["Prompt"], row["GT"].strip(), dict(row))

    def skipped_indexes(self, protocol: str) -> frozenset[int]:
        return frozenset(CISCO_DUPLICATE_ROWS) if protocol == "cisco" else frozenset()

    base_instruction = CISCO_INSTRUCTION  # FAITH uses the same instruction for base and chat models

    def base_question(self, item: Item) -> str:
        return "CVE Description: " + item.fields["Description"]

    def base_answer(self, item: Item) -> str:
        return item.gold

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        return f"{CTIBENCH_INSTRUCTION}{fields['Description']} "

    def render_answer(self, vector: str) -> str | None:
        """The trained answer: each base metric on its own line, the base score, the vector alone on the last line.
        None when the vector lacks a base metric or does not score."""
        body = vector.split("/", 1)[1] if vector.startswith("CVSS:") else vector
        try:
            metrics = dict(part.split(":", 1) for part in body.split("/"))
        except ValueError:
            return None
        # Temporal and environmental metrics (E:P/RL:O/...) are not part of the task: keep the base eight.
        if not set(CVSS_METRICS) <= set(metrics):
            return None
        body = "/".join(f"{key}:{metrics[key]}" for key in CVSS_METRICS)
        if base_score("CVSS:3.1/" + body) is None:
            return None
        lines = [metric_prefix(key) + metric_choice(key, metrics[key]) for key in CVSS_METRICS]
        score = CVSS3("CVSS:3.1/" + body).scores()[0]
        return "\n".join(lines) + f"\n\nBase score {score}.\n\nCVSS:3.1/{body}"

    def answer_value(self, vector: str) -> str:
        return vector

    def cisco_prompt(self, item: Item) -> str:
        return CISCO_INSTRUCTION + "\n\n" + self.base_question(item)

    def extract(self, response: str, rules: str) -> Answer:
        if rules == "ctibench":
            found = CTIBENCH_VECTOR.findall(response)
            # The release prefixes "CVSS:3.0/" before scoring; a vector the cvss library rejects is unparseable.
            vector = "CVSS:3.0/" + found[-1].upper() if found else None
            kind = "proper"
        elif rules == "cisco":
            vector, kind = first_match(response, CISCO_PATTERNS)
        else:
            found = ROBUST_VECTOR.findall(response)
            vector = found[-1].upper() if found else None
            if vector is not None and not vector.startswith("CVSS:"):
                vector = "CVSS:3.1/" + vector
            kind = "proper"
        if vector is None or base_score(vector) is None:
            return INVALID
        return Answer(vector, kind)

    def stats(self, item: Item, answer: Answer) -> dict[str, float]:
        gold = base_score(item.gold)
        predicted = base_score(answer.value) if answer.valid else None
        deviation = abs(predicted - gold) if predicted is not None and gold is not None else None
        return {
            "n": 1.0,
            "valid": float(deviation is not None),
            "deviation": deviation or 0.0,
            "deviation_all": deviation if deviation is not None else MAX_DEVIATION,
            "exact": float(answer.valid and answer.value.split("/", 1)[-1] == item.gold.split("/", 1)[-1]),
        }

    def metrics(self, totals: Mapping[str, Any], rules: str) -> dict[str, Any]:
        n, valid = totals["n"], totals["valid"]
        out = {
            **validity(totals),
            # The release: mean absolute deviation over parseable predictions.
            "mad": ratio(totals["deviation"], valid),
            # Strict: every item, an unparseable vector counted at the maximum deviation of 10.
            "strict_mad": ratio(totals["deviation_all"], n),
            "exact_vector_rate": ratio(totals["exact"], n),
        }
        if rules == "cisco":
            out["score"] = 1.0 - out["strict_mad"] / MAX_DEVIATION
        return out

    def paired_value(self, stats: Mapping[str, float]) -> float:
        return stats["deviation_all"]

    def is_binary(self) -> bool:
        return False

    def official_metric_names(self, rules: str) -> list[str]:
        return ["score", "strict_mad"] if rules == "cisco" else ["mad", "strict_mad"]
