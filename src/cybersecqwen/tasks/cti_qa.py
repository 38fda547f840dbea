"""`cti-qa`, a structured form the server offers beyond CTI-Bench: a CTI question -> a short factual answer.
No benchmark file: it is scored on held-out corpus examples (token F1 of the answer, as SQuAD defines it).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping

from cybersecqwen.tasks.base import INVALID, Answer, Item, Task, ratio, validity
from cybersecqwen.tasks.registry import register

INSTRUCTION = (
    "Answer the following cyber threat intelligence question accurately and concisely, using only well-established "
    "facts from MITRE ATT&CK, CWE and CAPEC."
)


def answer_tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@register
class CtiQA(Task):
    name = "cti-qa"
    protocols = ("ctibench",)
    primary_metric = "token_f1"
    item_text_fields = ("Question",)

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        return f"{INSTRUCTION}\n\nQuestion: {fields['Question']}"

    def render_answer(self, answer: str) -> str:
        return answer  # free text written from the catalogs' facts by the corpus builder

    def answer_value(self, answer: str) -> str:
        return answer

    def extract(self, response: str, rules: str) -> Answer:
        text = response.strip()
        return Answer(text, "proper") if text else INVALID

    def stats(self, item: Item, answer: Answer) -> dict[str, float]:
        predicted = Counter(answer_tokens(answer.value)) if answer.valid else Counter()
        gold = Counter(answer_tokens(item.gold))
        common = sum((predicted & gold).values())
        f1 = 0.0 if not common else 2 * common / (sum(predicted.values()) + sum(gold.values()))
        return {"n": 1.0, "valid": float(answer.valid), "token_f1": f1}

    def metrics(self, totals: Mapping[str, Any], rules: str) -> dict[str, Any]:
        return {**validity(totals), "token_f1": ratio(totals["token_f1"], totals["n"])}

    def paired_value(self, stats: Mapping[str, float]) -> float:
        return stats["token_f1"]

    def is_binary(self) -> bool:
        return False
