"""What a document states, read exactly, each with its evidence span: CWE ids, CVSS vectors (with the CVE each belongs
to where the document groups them), vendor and product lines. The advisory analysis returns these as
`"origin": "stated"` before any inference, and infers only where nothing is stated.

Nothing stated is dropped silently: an id the catalog lacks or retires, or a malformed vector, comes back with a
`flags` entry saying so.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from cybersecqwen.answering.deadline import check_deadline
from cybersecqwen.tasks.vsp import base_score

CWE_ID = re.compile(r"(?<![\w-])CWE[-\u2010\u2011 ]?(\d{1,5})(?!\w)")
CVE_ID = re.compile(r"(?<![\w-])CVE-\d{4}-\d{4,}(?!\w)", re.IGNORECASE)
METRICS = ("AV", "AC", "PR", "UI", "S", "C", "I", "A")
VALUES = {"AV": "NALP", "AC": "LH", "PR": "NLH", "UI": "NR", "S": "UC", "C": "NLH", "I": "NLH", "A": "NLH"}
# A full vector (CVSS:3.0/3.1 prefix), or the bare base metrics a CVSS label precedes (CISA writes
# "the CVSS vector string is (AV:N/AC:L/...)"). Anything vector-shaped is caught, then checked metric by metric.
VECTOR = re.compile(r"CVSS:(?P<version>\d\.\d)/(?P<body>(?:[A-Za-z]{1,3}:[A-Za-z]{1,2}/?)+)|(?P<bare>\bAV:[A-Za-z]/(?:[A-Za-z]{1,3}:[A-Za-z]{1,2}/?)+)")
VECTOR_LABEL = re.compile(r"(?i)cvss[^\n]{0,80}$")
# "Vendor: X", "Equipment: A, B", "Product(s): ...", "Affected product: ...", "Package: name (ecosystem)"
FIELD_LINE = re.compile(r"(?im)^[ \t]*(?P<key>vendors?|equipment|products?|affected products?|package)[ \t]*:[ \t]*(?P<value>[^\n]+?)[ \t]*$")
PACKAGE = re.compile(r"^(?P<name>.+?)\s*\((?P<ecosystem>[^()]+)\)$")
GROUP_WINDOW = 1_200  # characters around a CVE id within which a stated CWE or vector is taken to be its own


def cwe_ids(text: str, known: dict[str, tuple[str, str]], usable: dict) -> list[dict[str, Any]]:
    """Every CWE id the text writes, first mention first: the catalog's name and URL, and a flag for an id CWE
    retires or prohibits for mapping, or one CWE does not hold as a weakness (a category, a view, or no such id)."""
    out: dict[str, dict[str, Any]] = {}
    for match in CWE_ID.finditer(text):
        check_deadline()
        cwe_id = f"CWE-{int(match.group(1))}"
        if cwe_id in out:
            continue
        name, why = known.get(cwe_id, ("", "not a weakness in this CWE catalog (a category or view, or no such id)"))
        out[cwe_id] = {"cwe_id": cwe_id, "name": name or None, "url": f"https://cwe.mitre.org/data/definitions/{cwe_id[4:]}.html",
                       "evidence": [match.start(), match.end()], "confidence": 1.0, "origin": "stated",
                       "flags": [why] if why else [], "usable": cwe_id in usable}
    return list(out.values())


def vectors(text: str) -> list[dict[str, Any]]:
    """Every CVSS v3 vector the text writes (a bare one only after a CVSS label), checked metric by metric: a vector
    that does not parse is returned with a flag naming what is wrong, never dropped."""
    out, seen = [], set()
    for match in VECTOR.finditer(text):
        check_deadline()
        if match.group("bare") and not VECTOR_LABEL.search(text[max(0, match.start() - 120):match.start()]):
            continue
        body = (match.group("body") or match.group("bare")).rstrip("/")
        version = match.group("version") or "3.1"
        parts = dict(part.split(":", 1) for part in body.split("/") if ":" in part)
        flags = []
        if version not in ("3.0", "3.1"):
            flags.append(f"CVSS version {version} is not read here (3.0 and 3.1 are)")
        missing = [m for m in METRICS if m not in parts]
        wrong = [f"{m}:{parts[m]}" for m in METRICS if m in parts and (len(parts[m]) != 1 or parts[m] not in VALUES[m])]
        if missing:
            flags.append(f"missing base metrics {', '.join(missing)}")
        if wrong:
            flags.append(f"invalid values {', '.join(wrong)}")
        vector = f"CVSS:{version}/" + "/".join(f"{m}:{parts[m]}" for m in METRICS if m in parts)
        if vector in seen:
            continue
        seen.add(vector)
        score = base_score(vector.replace("CVSS:3.0/", "CVSS:3.1/")) if not flags else None
        out.append({"vector": vector, "written": match.group(0), "base_score": score, "evidence": [match.start(), match.end()],
                    "confidence": 1.0, "origin": "stated", "flags": flags})
    return out


def per_cve(text: str, stated_cwes: list[dict[str, Any]], stated_vectors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each CVE id with the CWE and the vector the document states nearest to it (within GROUP_WINDOW characters),
    when the document states them beside its CVEs; a CVE with neither is left out (nothing stated to group).
    Sorted positions and bisection keep it O(n log n) in the ids (a document of thousands of CVEs and CWEs)."""
    cves: dict[str, int] = {}
    for match in CVE_ID.finditer(text):
        check_deadline()
        cves.setdefault(match.group(0).upper(), match.start())
    firsts = sorted(cves.values())

    def nearest(items: list[tuple[int, dict[str, Any]]], starts: list[int], position: int):
        best = None
        for start, item in items[bisect.bisect_left(starts, position - GROUP_WINDOW):bisect.bisect_right(starts, position + GROUP_WINDOW)]:
            low, high = min(position, start), max(position, start)
            if bisect.bisect_left(firsts, high) - bisect.bisect_right(firsts, low) > 0:
                continue  # another CVE between them: the item belongs to that one
            if best is None or abs(start - position) < abs(best[0] - position):
                best = (start, item)
        return best[1] if best else None

    usable = [sorted(((i["evidence"][0], i) for i in items if not i["flags"]), key=lambda pair: pair[0])
              for items in (stated_cwes, stated_vectors)]
    starts = [[start for start, _ in items] for items in usable]
    out = []
    for cve_id, position in cves.items():
        check_deadline()
        cwe, vector = (nearest(items, s, position) for items, s in zip(usable, starts))
        if cwe or vector:
            out.append({"cve_id": cve_id, "cwe_id": cwe["cwe_id"] if cwe else None, "cvss_vector": vector["vector"] if vector else None,
                        "base_score": vector["base_score"] if vector else None, "origin": "stated",
                        "evidence": sorted({position, *(i["evidence"][0] for i in (cwe, vector) if i)})})
    return out


def affected_lines(text: str) -> list[dict[str, Any]]:
    """Vendors and products an advisory names in its own fields ("Vendor:", "Equipment:", "Products:", "Package:")."""
    out: list[dict[str, Any]] = []
    vendor = None
    for match in FIELD_LINE.finditer(text):
        check_deadline()
        key, value = match.group("key").lower(), match.group("value").strip()
        start = match.start("value")
        if key.startswith("vendor"):
            vendor = value
            continue
        if key == "package":
            package = PACKAGE.match(value)
            names = [(package.group("name"), start) if package else (value, start)]
        else:
            names, offset = [], 0
            for piece in re.split(r",\s*|\s+and\s+", value):
                at = value.find(piece, offset)
                offset = at + len(piece)
                if piece.strip():
                    names.append((piece.strip(), start + at))
        for name, at in names:
            out.append({"vendor": vendor, "product": name, "versions": None, "evidence": [at, at + len(name)],
                        "confidence": 1.0, "origin": "stated"})
    if vendor and not out:
        out.append({"vendor": vendor, "product": None, "versions": None, "evidence": [text.find(vendor), text.find(vendor) + len(vendor)],
                    "confidence": 1.0, "origin": "stated"})
    return out
