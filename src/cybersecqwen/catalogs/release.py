"""The CVE->CWE training file released with CyberSecQwen-4B, parsed back into (description, CWE) pairs so its
corpus can be rebuilt through our own prompt builder and audited like any other source."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.catalogs import registry

MARKER = "CVE Description: "


@dataclass(frozen=True)
class ReleaseExample:
    description: str
    cwe_id: str


@registry.parser("cybersecqwen-release-rcm-2021", "rcm_2021_train.jsonl")
def parse_release_rcm(path: Path) -> list[ReleaseExample]:
    out = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                description = record["prompt"].split(MARKER, 1)[1].strip()
                cwe = re.findall(r"CWE-\d+", record["response"])[-1]
            except (json.JSONDecodeError, KeyError, IndexError, AttributeError):
                raise CybersecqwenError(f"{path} line {line_number} is not a {{prompt, response}} CVE->CWE record") from None
            out.append(ReleaseExample(description, cwe))
    return out
