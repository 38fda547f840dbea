"""CVE records (CVE JSON 5, CISA Vulnrichment selection): description, CWE ids, CVSS v3 vector.

The labels CSV beside the records holds the same fields already chosen (CNA first, else CISA-ADP); the
parser reads it and checks each row against the CVE id pattern, so a truncated file fails by line.
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError

CVE_ID = re.compile(r"^CVE-\d{4}-\d{4,}$")
COLUMNS = ("cve_id", "cwe_ids", "cvss_v3_vector", "description")


@dataclass(frozen=True)
class CveRecord:
    cve_id: str
    description: str
    cwe_ids: tuple[str, ...]
    cvss_vector: str


def parse_cve_labels(path: Path) -> list[CveRecord]:
    csv.field_size_limit(sys.maxsize)
    records = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CybersecqwenError(f"{path} lacks column(s) {', '.join(missing)}")
            for line, row in enumerate(reader, start=2):
                if not CVE_ID.match(row.get("cve_id") or "") or row.get("description") is None:
                    raise CybersecqwenError(f"{path} line {line} is malformed (cve_id {row.get('cve_id')!r})")
                cwe_ids = tuple(c for c in (row["cwe_ids"] or "").split(";") if c.startswith("CWE-"))
                records.append(CveRecord(row["cve_id"], row["description"].strip(), cwe_ids, (row["cvss_v3_vector"] or "").strip()))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CybersecqwenError(f"{path} cannot be read as CSV: {exc}") from None
    return records
