"""CVE records in CVE JSON 5 (the CISA Vulnrichment selection): description, CWE ids, CVSS v3 vector.

Labels come from the CNA container first and from the CISA-ADP container when the CNA gave none, the
selection rule of each mirror labels file (a test checks the two agree on every record): the 2022-2023 file read
cweId fields only, the 2024 file also the ids a problem-type description names.
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
CWE_PREFIX = re.compile(r"CWE-\d+(?![\d])")


@dataclass(frozen=True)
class CveRecord:
    cve_id: str
    description: str
    cwe_ids: tuple[str, ...]
    cvss_vector: str
    affected: tuple[tuple[str, str], ...] = ()  # (vendor, product) of the CNA's `affected` entries


def _cwe_ids(container: dict[str, Any], from_text: bool = False) -> tuple[str, ...]:
    """The container's CWE ids: its cweId fields; with from_text also the ids its descriptions name (some CNAs write
    "CWE-416: Use After Free" and no cweId: 2,303 of 2024's records)."""
    descriptions = [d for problem in container.get("problemTypes", []) for d in problem.get("descriptions", [])]
    found = [cwe for d in descriptions
             for cwe in [d.get("cweId") or "", *(CWE_PREFIX.findall(d.get("description") or "") if from_text else ())]]
    return tuple(cwe for cwe in dict.fromkeys(found) if CWE_ID.match(cwe))


def _cvss_vector(container: dict[str, Any]) -> str:
    for key in ("cvssV3_1", "cvssV3_0"):
        for metric in container.get("metrics", []):
            if key in metric and metric[key].get("vectorString"):
                return metric[key]["vectorString"]
    return ""


def parse_record(record: dict[str, Any], cwe_from_text: bool = False) -> CveRecord:
    containers = record["containers"]
    cna = containers["cna"]
    adp = containers.get("adp", [])
    description = next(d["value"] for d in cna.get("descriptions", []) if d.get("lang", "").startswith("en"))
    cwe_ids = next((ids for container in (cna, *adp) if (ids := _cwe_ids(container or {}, cwe_from_text))), ())
    vector = _cvss_vector(cna) or next((v for v in map(_cvss_vector, adp) if v), "")
    # CNA text carries \r\n and runs of spaces; prompts want one line of prose.
    affected = tuple((str(a.get("vendor") or ""), str(a.get("product") or "")) for a in cna.get("affected", []) if isinstance(a, dict))
    return CveRecord(record["cveMetadata"]["cveId"], re.sub(r"\s+", " ", description).strip(), cwe_ids, vector, affected)


@registry.parser("cve-vulnrichment-2024", "cve-records-2024.jsonl.gz")
def parse_cve_records_2024(path: Path) -> list[CveRecord]:
    """2024's selection also read a CNA's id from its description text (its SOURCE.md and labels file)."""
    return parse_cve_records(path, cwe_from_text=True)


@registry.parser("cve-vulnrichment-2022-2023", "cve-records-2022-2023.jsonl.gz")
def parse_cve_records(path: Path, cwe_from_text: bool = False) -> list[CveRecord]:
    records = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(parse_record(json.loads(line), cwe_from_text))
                except json.JSONDecodeError as exc:
                    raise CybersecqwenError(f"{path} line {line_number} is malformed JSON at column {exc.colno}: {exc.msg}") from None
                except (KeyError, StopIteration, TypeError, AttributeError):
                    raise CybersecqwenError(f"{path} line {line_number} is not a CVE JSON 5 record with an English description") from None
    except (OSError, EOFError) as exc:
        raise CybersecqwenError(f"{path} cannot be read (truncated gzip?): {exc}") from None
    return records
