"""ATT&CK extraction: every technique a text describes, each candidate its own probability (multi-label fusion)."""

from __future__ import annotations

import bisect
import re
from typing import Any

from cybersecqwen.answering.deadline import check_deadline
from cybersecqwen.answering.shared import SENTENCE

TECHNIQUE_ID = re.compile(r"(?<![\w.])T(\d{4})(?:[./](\d{3}))?(?![\w])")


def stated(catalogs, text: str) -> list[dict[str, Any]]:
    """Technique ids the text itself writes (T1059, T1059.001, T1059/001), in order of first appearance, each with its
    span: active ids as written (sub-techniques kept), revoked ids mapped to their successor and flagged, deprecated
    ids flagged; ids ATT&CK never had are left out (a T-number is not a technique just by its shape)."""
    out: dict[str, dict[str, Any]] = {}
    bounds = None
    for match in TECHNIQUE_ID.finditer(text):
        check_deadline()
        written = f"T{match.group(1)}" + (f".{match.group(2)}" if match.group(2) else "")
        note, technique_id = None, written
        if written not in catalogs.written and written in catalogs.retired:
            successor = catalogs.retired[written]
            note = f"{written} is revoked in ATT&CK; its successor is {successor}" if successor else f"{written} is deprecated in ATT&CK"
            technique_id = successor or written
        entry = catalogs.written.get(technique_id)
        if technique_id in out or (entry is None and note is None):
            continue
        bounds = bounds or Sentences(text)
        out[technique_id] = {"technique_id": technique_id, "name": entry.name if entry else "(deprecated)",
                             "url": entry.url if entry else f"https://attack.mitre.org/techniques/{written.replace('.', '/')}/",
                             "tactics": [catalogs.tactics.get(t, t) for t in entry.tactics] if entry else [],
                             "evidence": bounds.around(match.start(), match.end()), "span": [match.start(), match.end()],
                             "confidence": 1.0, "components": None, "needs_review": note is not None, "origin": "stated",
                             "note": note, "flags": [note] if note else []}
    return list(out.values())


class Sentences:
    """The text's sentence ends, found once: the sentence around any span by bisection (a document writing hundreds of
    technique ids costs one pass, not one pass per id)."""

    def __init__(self, text: str) -> None:
        self.text = text
        marks = [(m.start(), m.end()) for m in SENTENCE.finditer(text)]
        self.starts, self.ends = [a for a, _ in marks], [b for _, b in marks]

    def around(self, start: int, end: int) -> str:
        before = bisect.bisect_right(self.ends, start)
        left = self.ends[before - 1] if before else 0
        after = bisect.bisect_left(self.starts, end)
        right = self.starts[after] if after < len(self.starts) else len(self.text)
        return self.text[left:right].strip()[:500]

# `service` below is the shared core (answering/service.py, CtiService), passed in: the jobs never import it (no circle).


def extract(service, text: str, max_techniques: int = 5, min_confidence: float | None = None) -> dict[str, Any]:
    """First every technique id the text writes ("origin": "stated", with its span); then the fused inferences: the
    best one always when the text states none, and every other one at or above `min_confidence` (default: the
    threshold learned on validation items for this model and these heads), up to max_techniques ("origin": "inferred")."""
    min_confidence = service.fusion.select_above if min_confidence is None else min_confidence
    written = stated(service.catalogs, text)  # what the text states comes first, exactly; inferences follow
    catalog = service.catalogs.attack
    ranked = service.fuse("attack", text, "cti-ate", {"Platform": "Enterprise", "Description": service.model_text(text)[0]})
    sentences = [s.strip() for s in SENTENCE.split(text) if s.strip()]
    found = []
    for row in ranked[:max_techniques]:
        if row["confidence"] < min_confidence and (found or written):
            break
        if row["id"] in {t["technique_id"].split(".")[0] for t in written}:
            continue  # the text states it (or one of its sub-techniques): the stated entry stands
        technique_id, entry = row["id"], catalog[row["id"]]
        evidence = max(sentences, key=lambda s: service.catalogs.attack_index.overlap(technique_id, s)) if sentences else text
        found.append({"technique_id": technique_id, "name": entry.name, "url": entry.url,
                      "tactics": [service.catalogs.tactics.get(t, t) for t in entry.tactics],
                      "evidence": evidence[:500], "confidence": round(row["confidence"], 4), "components": row["components"],
                      "needs_review": row["confidence"] < service.review_below["attack"], "origin": "inferred"})
    found = written + found
    documented = service.knowledge.documented(text) if service.knowledge is not None else []
    return {"techniques": found, "documented": documented, "needs_review": any(t["needs_review"] for t in found),
            "method": "technique ids the text writes, exactly (stated); then " + service.method("attack", "CTI-ATE prompt")
                      + "; evidence = the sentence sharing most terms (inferred)",
            "note": service.reading_note("attack", text)}
