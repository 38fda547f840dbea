"""The two structured forms the server offers beyond CTI-Bench's own tasks, owned here like every task so the
corpus trains on exactly the text the server sends:

- `cwe-classify`: free vulnerability text -> a JSON object {"cwe_id", "name", "justification"};
- `cti-qa`: a CTI question -> a short factual answer.

They have no benchmark file: their scores come from held-out corpus examples (exact CWE match; token F1 of
the answer, as SQuAD defines it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Mapping

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.tasks.base import INVALID, AccuracyTask, Answer, Item, Task, ratio
from cybersecqwen.tasks.rcm import robust_cwe_ids

CWE_CLASSIFY_INSTRUCTION = (
    "Classify the software weakness described below with its MITRE CWE. Reply with one JSON object and nothing "
    'else: {"cwe_id": "CWE-<number>", "name": "<CWE name>", "justification": "<one sentence citing the text>"}'
)
CTI_QA_INSTRUCTION = (
    "Answer the following cyber threat intelligence question accurately and concisely, using only well-established "
    "facts from MITRE ATT&CK, CWE and CAPEC."
)


def cwe_json(cwe_id: str, name: str, justification: str) -> str:
    return json.dumps({"cwe_id": cwe_id, "name": name, "justification": justification}, ensure_ascii=False)


class NoBenchmarkFile:
    def load(self, data_dir=None, download: bool = False) -> list[Item]:
        raise CybersecqwenError(f"task {self.name} has no benchmark file; it is evaluated on held-out corpus examples")

    def make_item(self, index: int, row: Mapping[str, str]) -> Item:
        raise NotImplementedError


class CweClassify(NoBenchmarkFile, AccuracyTask):
    name = "cwe-classify"
    file_name = ""
    columns = ()
    primary_metric = "accuracy"
    protocols = ("ctibench",)

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        return f"{CWE_CLASSIFY_INSTRUCTION}\n\nText: {fields['Text']}"

    def extract(self, response: str, rules: str) -> Answer:
        match = re.search(r"\{.*\}", response, re.DOTALL)
        if match:
            try:
                payload = json.loads(match.group(0))
                cwe_id = str(payload.get("cwe_id", "")).upper().replace(" ", "")
                if re.fullmatch(r"CWE-\d+", cwe_id):
                    return Answer(f"CWE-{int(cwe_id[4:])}", "proper")
            except (json.JSONDecodeError, AttributeError, ValueError):
                pass
        ranked = robust_cwe_ids(response)
        return Answer(ranked[0], "improper") if ranked else INVALID


def answer_tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class CtiQA(NoBenchmarkFile, Task):
    name = "cti-qa"
    file_name = ""
    columns = ()
    primary_metric = "token_f1"
    protocols = ("ctibench",)

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        return f"{CTI_QA_INSTRUCTION}\n\nQuestion: {fields['Question']}"

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
        n, valid = totals["n"], totals["valid"]
        return {"n": n, "valid": valid, "invalid": n - valid, "parse_failure_rate": ratio(n - valid, n),
                "token_f1": ratio(totals["token_f1"], n)}

    def paired_value(self, stats: Mapping[str, float]) -> float:
        return stats["token_f1"]

    def is_binary(self) -> bool:
        return False

