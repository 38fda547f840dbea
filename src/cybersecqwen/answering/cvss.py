"""CVE -> CWE + CVSS: the weakness ranked as in cwe.py, and the CVSS 3.1 vector metric by metric, each scored after the
lines chosen before it (the answer form the corpus trains for CTI-VSP)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cybersecqwen.answering import cwe
from cybersecqwen.heads.fusion import log_softmax
from cybersecqwen.heads.model import median_vector
from cybersecqwen.models.base import ChoiceRequest
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.vsp import CVSS_METRICS, metric_choice, metric_prefix

# `service` below is the shared core (answering/service.py, CtiService), passed in: the jobs never import it (no circle).


def vector(service, description: str) -> dict[str, Any]:
    weights = service.fusion.weights["cvss"]
    head_probabilities = ({key: dict(service.heads.ranked(f"cvss-{key}", [description])[0]) for key in CVSS_METRICS}
                          if service.heads is not None and service.heads.has("cvss-AV") else {})
    messages = get_task("cti-vsp").prompt_messages({"Description": service.model_text(description)[0]})
    prefix, distributions = "", {}
    with_model = service.fusion.uses_model("cvss") and service.backend is not None
    for key, (_, values) in CVSS_METRICS.items():
        # The answer the corpus trains, line by line: each metric is scored after the lines chosen before it.
        prefix += metric_prefix(key)
        codes = list(values)
        choices = tuple(metric_choice(key, code) for code in codes)
        score = np.zeros(len(codes))
        if head_probabilities:
            # Alone, the head's weight only sharpens its distribution (the calibration fit): the vector is chosen from
            # the head's own probabilities, as `eval --model heads:` chooses it (one number per answerer, issue 36.6).
            score += (weights[0] if with_model else 1.0) * np.log([max(head_probabilities[key].get(code, 1e-6), 1e-6) for code in codes])
        if with_model:
            score += weights[1] * log_softmax(np.array(service.score(ChoiceRequest(messages, choices, prefix))))
        probabilities = np.exp(log_softmax(score))
        best = int(np.argmax(probabilities))
        distributions[key] = [(code, float(p)) for code, p in zip(codes, probabilities)]
        prefix += choices[best] + "\n"  # the model reads the likeliest lines before it
    # From the fused metric distributions, the vector as `eval --model heads:` chooses it (the median base score).
    return median_vector(distributions)


def map_cve(service, cve_id: str, description: str, top_k: int = 3) -> dict[str, Any]:
    ranked = cwe.rank(service, description, top_k, "cti-rcm")
    cvss = vector(service, description)
    return {"cve_id": cve_id, "cwe": ranked, "cvss": cvss,
            "needs_review": ranked[0]["confidence"] < service.review_below["cwe"] or cvss["confidence"] < service.review_below["cvss"],
            "method": service.method("cwe", "CTI-RCM prompt") + "; CVSS metric by metric (CTI-VSP prompt)",
            "note": service.reading_note("cwe", description) or service.reading_note("cvss", description)}
