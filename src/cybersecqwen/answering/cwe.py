"""CWE ranking: a text's weakness as fused catalog candidates (`/v1/cwe/classify`, and the CWE half of `/v1/cve/map`)."""

from __future__ import annotations

from typing import Any

# `service` below is the shared core (answering/service.py, CtiService), passed in: the jobs never import it (no circle).


def rank(service, text: str, top_k: int, task_name: str) -> list[dict[str, Any]]:
    field_name = "Text" if task_name == "cwe-classify" else "Description"
    results = []
    for row in service.fuse("cwe", text, task_name, {field_name: service.model_text(text)[0]})[:top_k]:
        entry = service.catalogs.cwe[row["id"]]
        results.append({"cwe_id": row["id"], "name": entry.name, "url": entry.url, "confidence": round(row["confidence"], 4),
                        "components": row["components"],
                        "justification": justification(service, row["id"], text, row["confidence"], row["shortlist"], "cwe")})
    return results


def justification(service, key: str, text: str, probability: float, shortlist: int, kind: str) -> str:
    index = service.catalogs.cwe_index if kind == "cwe" else service.catalogs.attack_index
    shared = [term for term in index.shared_terms(key, text) if index.idf[term] > 2][:5]
    because = f"terms shared with the catalog entry: {', '.join(shared)}" if shared else "no distinctive terms shared with the catalog entry"
    return f"fused probability {probability:.2f} among {shortlist} catalog candidates; {because}"


def classify(service, text: str, top_k: int = 3) -> dict[str, Any]:
    ranked = rank(service, text, top_k, "cwe-classify")
    return {"candidates": ranked, "needs_review": ranked[0]["confidence"] < service.review_below["cwe"],
            "method": service.method("cwe", "cwe-classify prompt"), "note": service.reading_note("cwe", text)}
