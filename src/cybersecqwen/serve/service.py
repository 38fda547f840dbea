"""The structured CTI jobs, shared by the HTTP server and `cybersecqwen enrich`.

Every answer is chosen by the model *among real catalog entries*: a TF-IDF shortlist of valid, non-deprecated
CWE weaknesses or ATT&CK techniques is scored by the model as the start of the answer form it was trained on
(the prompts come from the task modules, so serving and training never drift apart). An id that is not in the
catalog can therefore never be returned. Confidence is the model's probability normalised over the
shortlist; below `review_below` the answer is flagged `needs_review`. The CVSS vector is chosen metric by
metric the same way, so it is always a valid vector with a computable base score.
"""

from __future__ import annotations

import math
import re
from typing import Any

from cybersecqwen.models.base import ChoiceRequest, GenerationRequest
from cybersecqwen.serve.catalog import COMMON_CWES, COMMON_TECHNIQUES, Catalogs, words
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.ate import technique_list
from cybersecqwen.tasks.mcq import LETTERS
from cybersecqwen.tasks.vsp import CVSS_METRICS, base_score, metric_choice, metric_prefix

SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
REVIEW_BELOW = 0.5


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


class CtiService:
    def __init__(self, backend, catalogs: Catalogs, shortlist: int = 12, review_below: float = REVIEW_BELOW) -> None:
        self.backend = backend
        self.catalogs = catalogs
        self.shortlist = shortlist
        self.review_below = review_below

    # --- model access (the server's gate holds the model lock around each job) ---------------------------
    def score(self, request: ChoiceRequest) -> list[float]:
        if len(request.choices) == 1:  # a one-entry catalog: nothing to choose between
            return [0.0]
        return self.backend.score_choices([request])[0]

    def generate(self, request: GenerationRequest) -> str:
        return self.backend.generate([request])[0]

    # --- CWE -----------------------------------------------------------------------------------------------
    def choose(self, task_name: str, fields: dict[str, str], candidates: list[str], names: dict[str, Any]) -> list[float]:
        """Probabilities of the candidates, scored in the answer form the corpus trains for the task."""
        task = get_task(task_name)
        choices = tuple(task.choice_text(c, names[c].name) for c in candidates)
        return softmax(self.score(ChoiceRequest(task.prompt_messages(fields), choices, task.answer_prefix)))

    def rank_cwe(self, text: str, top_k: int, task_name: str) -> list[dict[str, Any]]:
        catalog = self.catalogs.cwe
        candidates = self.catalogs.cwe_index.shortlist(text, self.shortlist, COMMON_CWES)
        field = "Text" if task_name == "cwe-classify" else "Description"
        probabilities = self.choose(task_name, {field: text}, candidates, catalog)
        ranked = sorted(zip(candidates, probabilities), key=lambda pair: -pair[1])[:top_k]
        results = []
        for cwe_id, probability in ranked:
            entry = catalog[cwe_id]
            results.append({"cwe_id": cwe_id, "name": entry.name, "url": entry.url, "confidence": round(probability, 4),
                            "justification": self.justification(cwe_id, text, probability, len(candidates), "cwe")})
        return results

    def justification(self, key: str, text: str, probability: float, shortlist: int, kind: str) -> str:
        index = self.catalogs.cwe_index if kind == "cwe" else self.catalogs.attack_index
        shared = sorted({w for w in words(text) if w in index.vectors[key] and index.idf.get(w, 0) > 2}, key=lambda w: -index.idf[w])[:5]
        because = f"terms shared with the catalog entry: {', '.join(shared)}" if shared else "no distinctive terms shared with the catalog entry"
        return f"model probability {probability:.2f} among {shortlist} catalog candidates; {because}"

    def classify_cwe(self, text: str, top_k: int = 3) -> dict[str, Any]:
        ranked = self.rank_cwe(text, top_k, "cwe-classify")
        return {"candidates": ranked, "needs_review": ranked[0]["confidence"] < self.review_below,
                "method": "model-scored catalog shortlist (cwe-classify prompt)"}

    # --- CVE -> CWE + CVSS ---------------------------------------------------------------------------------
    def cvss_vector(self, description: str) -> dict[str, Any]:
        messages = get_task("cti-vsp").prompt_messages({"Description": description})
        prefix, parts, confidences = "", [], []
        for key, (_, values) in CVSS_METRICS.items():
            # The answer the corpus trains, line by line: each metric is scored after the lines chosen before it.
            prefix += metric_prefix(key)
            codes = list(values)
            choices = tuple(metric_choice(key, code) for code in codes)
            probabilities = softmax(self.score(ChoiceRequest(messages, choices, prefix)))
            best = max(range(len(codes)), key=lambda i: probabilities[i])
            parts.append(f"{key}:{codes[best]}")
            confidences.append(probabilities[best])
            prefix += choices[best] + "\n"
        vector = "CVSS:3.1/" + "/".join(parts)
        return {"vector": vector, "base_score": base_score(vector), "confidence": round(min(confidences), 4),
                "metric_confidence": {k: round(c, 4) for k, c in zip(CVSS_METRICS, confidences)}}

    def map_cve(self, cve_id: str, description: str, top_k: int = 3) -> dict[str, Any]:
        ranked = self.rank_cwe(description, top_k, "cti-rcm")
        cvss = self.cvss_vector(description)
        return {"cve_id": cve_id, "cwe": ranked, "cvss": cvss,
                "needs_review": ranked[0]["confidence"] < self.review_below or cvss["confidence"] < self.review_below,
                "method": "model-scored catalog shortlist (CTI-RCM prompt); CVSS metric by metric (CTI-VSP prompt)"}

    # --- ATT&CK extraction ---------------------------------------------------------------------------------
    def extract_attack(self, text: str, max_techniques: int = 5, min_confidence: float = 0.1) -> dict[str, Any]:
        catalog = self.catalogs.attack
        candidates = self.catalogs.attack_index.shortlist(text, self.shortlist, COMMON_TECHNIQUES)
        fields = {"Platform": "Enterprise", "Description": text,
                  "TechniqueList": technique_list([(c, catalog[c].name) for c in candidates], "Enterprise")}
        probabilities = self.choose("cti-ate", fields, candidates, catalog)
        ranked = sorted(zip(candidates, probabilities), key=lambda pair: -pair[1])
        sentences = [s.strip() for s in SENTENCE.split(text) if s.strip()]
        found = []
        for technique_id, probability in ranked[:max_techniques]:
            if probability < min_confidence and found:
                break
            entry = catalog[technique_id]
            evidence = max(sentences, key=lambda s: self.catalogs.attack_index.overlap(technique_id, s)) if sentences else text
            found.append({"technique_id": technique_id, "name": entry.name, "url": entry.url,
                          "tactics": [self.catalogs.tactics.get(t, t) for t in entry.tactics],
                          "evidence": evidence[:500], "confidence": round(probability, 4),
                          "needs_review": probability < self.review_below})
        return {"techniques": found, "needs_review": any(t["needs_review"] for t in found),
                "method": "model-scored catalog shortlist (CTI-ATE prompt); evidence = the sentence sharing most terms"}

    # --- Q&A -----------------------------------------------------------------------------------------------
    def ask(self, question: str, options: list[str] | None = None, max_tokens: int = 256) -> dict[str, Any]:
        if options:
            fields = {"Question": question, **{f"Option {letter}": option for letter, option in zip(LETTERS, options)}}
            letters = LETTERS[: len(options)]
            mcq = get_task("cti-mcq")
            probabilities = softmax(self.score(ChoiceRequest(mcq.prompt_messages(fields), letters, mcq.choice_prefix("ctibench"))))
            best = max(range(len(letters)), key=lambda i: probabilities[i])
            return {"answer": letters[best], "option": options[best], "confidence": round(probabilities[best], 4),
                    "probabilities": dict(zip(letters, (round(p, 4) for p in probabilities))),
                    "needs_review": probabilities[best] < self.review_below}
        reply = self.generate(GenerationRequest(get_task("cti-qa").prompt_messages({"Question": question}), max_tokens=max_tokens))
        return {"answer": reply.strip(), "confidence": None, "needs_review": True,
                "note": "free-text answers carry no calibrated confidence: review before use"}
