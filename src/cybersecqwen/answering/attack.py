"""ATT&CK extraction: every technique a text describes, each candidate its own probability (multi-label fusion)."""

from __future__ import annotations

from typing import Any

from cybersecqwen.answering.shared import SENTENCE

# `service` below is the shared core (answering/service.py, CtiService), passed in: the jobs never import it (no circle).


def extract(service, text: str, max_techniques: int = 5, min_confidence: float | None = None) -> dict[str, Any]:
    """The best technique always, then every other one at or above `min_confidence` (default: the threshold
    learned on validation items for this model and these heads), up to max_techniques."""
    min_confidence = service.fusion.select_above if min_confidence is None else min_confidence
    catalog = service.catalogs.attack
    ranked = service.fuse("attack", text, "cti-ate", {"Platform": "Enterprise", "Description": service.model_text(text)[0]})
    sentences = [s.strip() for s in SENTENCE.split(text) if s.strip()]
    found = []
    for row in ranked[:max_techniques]:
        if row["confidence"] < min_confidence and found:
            break
        technique_id, entry = row["id"], catalog[row["id"]]
        evidence = max(sentences, key=lambda s: service.catalogs.attack_index.overlap(technique_id, s)) if sentences else text
        found.append({"technique_id": technique_id, "name": entry.name, "url": entry.url,
                      "tactics": [service.catalogs.tactics.get(t, t) for t in entry.tactics],
                      "evidence": evidence[:500], "confidence": round(row["confidence"], 4), "components": row["components"],
                      "needs_review": row["confidence"] < service.review_below["attack"]})
    return {"techniques": found, "needs_review": any(t["needs_review"] for t in found),
            "method": service.method("attack", "CTI-ATE prompt") + "; evidence = the sentence sharing most terms",
            "note": service.reading_note("attack", text)}
