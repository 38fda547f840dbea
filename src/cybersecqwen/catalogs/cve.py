"""CVE records in CVE JSON 5 (the CISA Vulnrichment selection): description, CWE ids, CVSS v3 vector.

Labels come from the CNA container first and from the CISA-ADP container when the CNA gave none, the
selection rule of the mirror's labels file (a test checks the two agree on every record).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.catalogs import registry

CWE_ID = re.compile(r"^CWE-\d+$")


@dataclass(frozen=True)
class CveRecord:
    cve_id: str
    description: str
    cwe_ids: tuple[str, ...]
    cvss_vector: str
    affected: tuple[tuple[str, str], ...] = ()  # (vendor, product) of the CNA's `affected` entries


def _cwe_ids(container: dict[str, Any]) -> tuple[str, ...]:
    ids = []
    for problem in container.get("problemTypes", []):
        for description in problem.get("descriptions", []):
            cwe = description.get("cweId", "")
            if CWE_ID.match(cwe) and cwe not in ids:
                ids.append(cwe)
    return tuple(ids)


def _cvss_vector(container: dict[str, Any]) -> str:
    for key in ("cvssV3_1", "cvssV3_0"):
        for metric in container.get("metrics", []):
            if key in metric and metric[key].get("vectorString"):
                return metric[key]["vectorString"]
    return ""


def parse_record(record: dict[str, Any]) -> CveRecord:
    containers = record["containers"]
    cna = containers["cna"]
    adp = containers.get("adp", [])
    description = next(d["value"] for d in cna.get("descriptions", []) if d.get("lang", "").startswith("en"))
    cwe_ids = _cwe_ids(cna) or next((ids for ids in map(_cwe_ids, adp) if ids), ())
    vector = _cvss_vector(cna) or next((v for v in map(_cvss_vector, adp) if v), "")
    # CNA text carries \r\n and runs of spaces; prompts want one line of prose.
    affected = tuple((str(a.get("vendor") or ""), str(a.get("product") or "")) for a in cna.get("affected", []) if isinstance(a, dict))
    return CveRecord(record["cveMetadata"]["cveId"], re.sub(r"\s+", " ", description).strip(), cwe_ids, vector, affected)


@registry.parser("cve-vulnrichment-2024", "cve-records-2024.jsonl.gz")
@registry.parser("cve-vulnrichment-2022-2023", "cve-records-2022-2023.jsonl.gz")
def parse_cve_records(path: Path) -> list[CveRecord]:
    records = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(parse_record(json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise CybersecqwenError(f"{path} line {line_number} is malformed JSON at column {exc.colno}: {exc.msg}") from None
                except (KeyError, StopIteration, TypeError, AttributeError):
                    raise CybersecqwenError(f"{path} line {line_number} is not a CVE JSON 5 record with an English description") from None
    except (OSError, EOFError) as exc:
        raise CybersecqwenError(f"{path} cannot be read (truncated gzip?): {exc}") from None
    return records
