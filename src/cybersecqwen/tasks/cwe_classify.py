"""`cwe-classify`, a structured form the server offers beyond CTI-Bench: free vulnerability text -> a JSON object
{"cwe_id", "name", "justification"}. Owned here like every task so the corpus trains on exactly the text the
server sends. No benchmark file: it is scored on held-out corpus examples (exact CWE match).
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from cybersecqwen.tasks.base import INVALID, AccuracyTask, Answer, AnswerForm
from cybersecqwen.tasks.rcm import robust_cwe_ids
from cybersecqwen.tasks.registry import register

INSTRUCTION = (
    "Classify the software weakness described below with its MITRE CWE. Reply with one JSON object and nothing "
    'else: {"cwe_id": "CWE-<number>", "name": "<CWE name>", "justification": "<one sentence citing the text>"}'
)


@register
class CweClassify(AccuracyTask):
    name = "cwe-classify"
    protocols = ("ctibench",)
    primary_metric = "accuracy"
    item_text_fields = ("Text",)
    # The JSON object the instruction asks for; the server scores the id after `{"cwe_id": "`. The comma belongs to the
    # choice: the tokenizer merges '"' and ',' into one token, so a choice ending at '"' would not be a token prefix.
    answer_form = AnswerForm("json-object", '{{"cwe_id": "{choice} "name": {name}, "justification": {justification}}}',
                             choice='{value}",', json_facts=True)

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        return f"{INSTRUCTION}\n\nText: {fields['Text']}"

    def render_answer(self, cwe_id: str, name: str, justification: str) -> str:
        return self.answer_form.render(cwe_id, name=name, justification=justification)

    def answer_value(self, cwe_id: str, name: str, justification: str) -> str:
        return cwe_id

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
