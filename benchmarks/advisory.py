"""Advisory analysis on real documents written by others (tests/data/advisories, SOURCES.md there): per-field
precision and recall, micro-averaged over documents, with 95% bootstrap CIs (documents resampled), split by kind,
beside a trivial baseline.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/advisory.py --heads HEADS [--out advisory.json]

Each source is rendered to the text an analyst would paste, in its publisher's web layout (a CISA ICS advisory page,
a GitHub advisory page, an ESET IOC page as published); ground truth comes from the source's own structured fields,
never from judgement: CSAF `cwe`, `scores`, `product_tree`; GHSA `database_specific.cwe_ids`, `severity`, `affected`;
ESET's indicator sections. The analysis runs heads-only (`--no-model`): what is measured is reading, not the model.

The trivial baseline writes down every id-shaped string the text holds (CVE-..., CWE-..., a CVSS vector, every
indicator ioc-finder sees): what a grep gives.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "advisories"
FIELDS = ("cve", "cwe", "vector", "vendor", "product", "indicator")
BASE = re.compile(r"AV:[NALP]/AC:[LH]/PR:[NLH]/UI:[NR]/S:[UC]/C:[NLH]/I:[NLH]/A:[NLH]")


# --- rendering: the page an analyst copies ------------------------------------------------------------------------
def render_csaf(doc: dict[str, Any]) -> str:
    """The layout of an ICS advisory's web version on cisa.gov (sections 1-3)."""
    vulns = doc["vulnerabilities"]
    products = ", ".join(p["name"] for p in doc["products"])
    lines = [f"ICS Advisory ({doc['tracking_id']})", doc["title"] or f"{doc['vendor']} {products}", "",
             "1. EXECUTIVE SUMMARY", f"CVSS v3 {max(v['cvss_v3']['baseScore'] for v in vulns)}", "ATTENTION: Exploitable remotely",
             f"Vendor: {doc['vendor']}", f"Equipment: {products}",
             f"Vulnerabilities: {', '.join(dict.fromkeys(v['cwe']['name'] for v in vulns))}", ""]
    if doc["risk_evaluation"]:
        lines += ["2. RISK EVALUATION", doc["risk_evaluation"], ""]
    lines += ["3. TECHNICAL DETAILS", "3.1 AFFECTED PRODUCTS",
              f"The following versions of {doc['vendor']} {products} are affected:"]
    lines += [f"{p['name']}: {', '.join(p['versions'])}" for p in doc["products"]]
    lines += ["", "3.2 VULNERABILITY OVERVIEW"]
    for n, v in enumerate(vulns, 1):
        base = v["cvss_v3"]["vectorString"].split("/", 1)[1]
        lines += [f"3.2.{n} {v['cwe']['name'].upper()} {v['cwe']['id']}", v["summary"].strip(),
                  f"{v['cve']} has been assigned to this vulnerability. A CVSS v3.1 base score of {v['cvss_v3']['baseScore']} has been "
                  f"calculated; the CVSS vector string is ({base}).", ""]
        lines += [f"For more information, see {u}" for u in v["references"][2:]]
    lines += ["", "4. MITIGATIONS", "CISA recommends users take defensive measures to minimize the risk of exploitation:"]
    lines += doc["references"][1:]
    return "\n".join(lines)


def render_ghsa(doc: dict[str, Any]) -> str:
    """The layout of an advisory page on github.com/advisories."""
    package = doc["affected"][0]["package"]
    events = {k: v for e in doc["affected"][0]["ranges"][0]["events"] for k, v in e.items()}
    affected = (f">= {events['introduced']}, " if events.get("introduced", "0") != "0" else "") + (
        f"< {events['fixed']}" if "fixed" in events else f"<= {events.get('last_affected', '')}")
    lines = [doc["summary"], "", f"Package: {package['name']} ({package['ecosystem']})", f"Affected versions: {affected}",
             f"Patched versions: {events.get('fixed', 'None')}", "", "Description", doc["details"], "", "References"]
    lines += [r["url"] for r in doc["references"]]
    lines += ["", "Severity", f"CVSS v3 base metrics: {doc['severity'][0]['score']}", "",
              "Weaknesses: " + (", ".join(doc["database_specific"]["cwe_ids"]) or "No CWEs"),
              f"CVE ID: {', '.join(a for a in doc['aliases'] if a.startswith('CVE-')) or 'No known CVE'}", f"GHSA ID: {doc['id']}"]
    return "\n".join(lines)


# --- ground truth from the sources' own fields ----------------------------------------------------------------------
def norm(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", value.lower()).strip()


def refang(value: str) -> str:
    return value.replace("[.]", ".").replace("hxxp", "http")


ESET_VALUE = re.compile(r"\b([0-9A-Fa-f]{64}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32})\b|`?((?:https?://)?[\w.-]+\[\.\][\w./:-]*)`?")


def eset_truth(text: str) -> set[str]:
    """Every hash in the page and every defanged host, address or URL (ESET defangs all its network indicators);
    the address of 'host:port' without the port; file names from the 'File names'/'mutexes'/'Files created' lists."""
    out = set()
    for match in ESET_VALUE.finditer(text):
        if match.group(1):
            out.add(match.group(1).lower())
        else:
            value = refang(match.group(2)).rstrip("`").lower()
            out.add(re.sub(r":\d+$", "", value) if "://" not in value else value)
    section = None
    for line in text.splitlines():
        if line.startswith("="):
            section = line.lower()
        elif section and any(w in section for w in ("file names", "mutexes", "files created")):
            value = line.strip().strip("-* ").strip("`")
            if value.startswith(("/", "$HOME")):
                out.add(value.lower())
    return out


def load_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DATA / "csaf").glob("*.json")):
        d = json.loads(path.read_text())
        docs.append({"name": path.stem, "kind": "CISA ICS advisory (CSAF)", "text": render_csaf(d), "truth": {
            "cve": {v["cve"] for v in d["vulnerabilities"]}, "cwe": {v["cwe"]["id"] for v in d["vulnerabilities"]},
            "vector": {BASE.search(v["cvss_v3"]["vectorString"]).group(0) for v in d["vulnerabilities"]},
            "vendor": {norm(d["vendor"])}, "product": {norm(p["name"]) for p in d["products"]}, "indicator": set()}, "actors": False})
    for path in sorted((DATA / "ghsa").glob("*.json")):
        d = json.loads(path.read_text())
        docs.append({"name": path.stem, "kind": "GitHub security advisory", "text": render_ghsa(d), "truth": {
            "cve": {a for a in d["aliases"] if a.startswith("CVE-")}, "cwe": set(d["database_specific"]["cwe_ids"]),
            "vector": {BASE.search(s["score"]).group(0) for s in d["severity"]}, "vendor": set(),
            "product": {norm(a["package"]["name"]) for a in d["affected"]}, "indicator": set()}, "actors": False})
    for path in sorted((DATA / "eset").glob("*.adoc")):
        text = path.read_text()
        docs.append({"name": path.stem, "kind": "ESET IOC page", "text": text, "truth": {
            "cve": set(), "cwe": set(), "vector": set(), "vendor": set(), "product": set(), "indicator": eset_truth(text)},
            "actors": None})  # the pages name actors, but no structured field says which: not scored
    return docs


# --- predictions -----------------------------------------------------------------------------------------------------
def predicted(result: dict[str, Any]) -> dict[str, set[str]]:
    vectors = set()
    for entry in result.get("cvss_vectors") or ([result["cvss"]] if result.get("cvss") else []):
        match = BASE.search(entry.get("vector") or "")
        if match:
            vectors.add(match.group(0))
    return {"cve": {c["cve_id"] for c in result["cves"]}, "cwe": {w["cwe_id"] for w in result["weaknesses"]}, "vector": vectors,
            "vendor": {norm(a["vendor"]) for a in result["affected"] if a.get("vendor")},
            "product": {norm(a["product"]) for a in result["affected"]},
            "indicator": {(i["value"].lower() if i["type"] != "file_path" else i["value"].lower()) for i in result["iocs"]}}


def baseline(text: str) -> dict[str, set[str]]:
    from ioc_finder import find_iocs

    found = find_iocs(text, parse_urls_without_scheme=False)
    return {"cve": set(re.findall(r"CVE-\d{4}-\d{4,}", text)), "cwe": set(re.findall(r"CWE-\d+", text)),
            "vector": set(BASE.findall(text)), "vendor": set(), "product": set(),
            "indicator": {v.lower() for key in ("urls", "domains", "ipv4s", "md5s", "sha1s", "sha256s", "email_addresses")
                          for v in found.get(key, [])}}


def counts(truth: set[str], guess: set[str]) -> tuple[int, int, int]:
    return len(truth & guess), len(guess), len(truth)


def prf(rows: list[tuple[int, int, int]]) -> tuple[float | None, float | None]:
    tp, p, g = (sum(r[i] for r in rows) for i in range(3))
    return (tp / p if p else None), (tp / g if g else None)


def ci(rows: list[tuple[int, int, int]], which: int, n: int = 2000, seed: int = 0) -> list[float] | None:
    rng, values = random.Random(seed), []
    for _ in range(n):
        sample = [rows[rng.randrange(len(rows))] for _ in rows]
        value = prf(sample)[which]
        if value is not None:
            values.append(value)
    if not values:
        return None
    values.sort()
    return [round(values[int(0.025 * len(values))], 3), round(values[int(0.975 * len(values)) - 1], 3)]


def table(docs: list[dict[str, Any]], guesses: list[dict[str, set[str]]]) -> dict[str, Any]:
    out = {}
    for field in FIELDS:
        # Scored on the documents whose source states the field (precision there too), and precision on the others:
        # anything returned for a document that states nothing is a false positive.
        rows = [counts(d["truth"][field], g[field]) for d, g in zip(docs, guesses) if d["truth"][field]]
        extra = sum(len(g[field]) for d, g in zip(docs, guesses) if not d["truth"][field] and d["truth"].get(field) is not None)
        if not rows:
            continue
        precision, recall = prf(rows)
        out[field] = {"documents": len(rows), "precision": round(precision, 3) if precision is not None else None,
                      "precision_ci": ci(rows, 0), "recall": round(recall, 3) if recall is not None else None, "recall_ci": ci(rows, 1),
                      "returned_on_documents_stating_none": extra}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from cybersecqwen.answering.advisory import analyze
    from cybersecqwen.answering.loading import load_service

    service = load_service(None, None, False, False, args.heads, "none")
    docs = load_documents()
    guesses, seconds, actors = [], [], 0
    for d in docs:
        start = time.perf_counter()
        result = analyze(service, d["text"], "text")
        seconds.append(time.perf_counter() - start)
        guesses.append(predicted(result))
        if d["actors"] is False:
            actors += len(result["actors"])
    kinds = sorted({d["kind"] for d in docs})
    report = {"documents": len(docs), "by_kind": {k: sum(d["kind"] == k for d in docs) for k in kinds},
              "all": table(docs, guesses), "baseline": table(docs, [baseline(d["text"]) for d in docs]),
              "kinds": {k: table([d for d in docs if d["kind"] == k], [g for d, g in zip(docs, guesses) if d["kind"] == k]) for k in kinds},
              "actor_false_positives_on_advisories": actors,
              "advisories_without_actors": sum(d["actors"] is False for d in docs),
              "seconds": {"max": round(max(seconds), 3), "mean": round(sum(seconds) / len(seconds), 3),
                          "largest_document_chars": max(len(d["text"]) for d in docs)}}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
