"""An advisory analysis as a MISP event (core format), built and checked by PyMISP's own model.

Attributes: indicators with their MISP types and `to_ids` set (they are what a sensor should match); CVE ids
(`vulnerability`), CWE ids (`weakness`), references (`link`) and affected products (`text`) with `to_ids` off. Tags:
ATT&CK techniques as MISP galaxy tags (`misp-galaxy:mitre-attack-pattern="Name - T1059"`), CWE ids as `cwe:CWE-79`.
Each attribute's comment says where it came from (stated or inferred, the evidence span and words), so the event
keeps the analysis' evidence for the analyst reviewing it.
"""

from __future__ import annotations

import json
from typing import Any

from cybersecqwen.errors import CybersecqwenError

MISP_TYPES = {"url": "url", "domain": "domain", "ipv4": "ip-dst", "ipv6": "ip-dst", "email": "email-src", "md5": "md5",
              "sha1": "sha1", "sha256": "sha256", "file_path": "filename", "registry_key": "regkey"}


def evidence_comment(origin: str, span: list[int] | None, text: str, extra: str = "") -> str:
    words = text[span[0]:span[1]][:160].replace("\n", " ") if span and len(span) == 2 else ""
    where = f" at [{span[0]}, {span[1]}): \"{words}\"" if words else ""
    return f"{origin}{where}{'; ' + extra if extra else ''}"[:1000]


def to_misp(result: dict[str, Any], name: str = "advisory") -> dict[str, Any]:
    """The MISP event (a dict in MISP's core format), loaded back into PyMISP's MISPEvent to check it."""
    try:
        from pymisp import MISPEvent
    except ImportError:  # a declared dependency: only a broken install gets here
        raise CybersecqwenError("MISP export needs pymisp (pip install pymisp)") from None
    text = result.get("text", "")
    event = MISPEvent()
    event.info = f"cybersecqwen analysis: {name}"[:255]
    event.analysis = 0  # initial: a machine reading, for a human to review
    event.threat_level_id = 4  # undefined: the analysis does not judge the threat
    for ioc in result.get("iocs", []):
        kind = MISP_TYPES.get(ioc["type"])
        if kind is None:
            continue
        flags = ", ".join(ioc.get("flags") or [])
        event.add_attribute(kind, ioc["value"], to_ids=True, category=None,
                            comment=evidence_comment(f"indicator ({ioc.get('marked', 'found')})", ioc.get("evidence"), text, flags))
    for cve in result.get("cves", []):
        event.add_attribute("vulnerability", cve["cve_id"], to_ids=False, comment=evidence_comment("stated", cve.get("evidence"), text))
    for weakness in result.get("weaknesses", []):
        event.add_attribute("weakness", weakness["cwe_id"], to_ids=False,
                            comment=evidence_comment(weakness.get("origin", "inferred"), weakness.get("evidence"), text,
                                                     f"confidence {weakness['confidence']}"))
        event.add_tag(f"cwe:{weakness['cwe_id']}")
    for technique in result.get("techniques", []):
        event.add_tag(f'misp-galaxy:mitre-attack-pattern="{technique["name"]} - {technique["technique_id"]}"')
    for product in result.get("affected", []):
        label = " ".join(filter(None, (product.get("vendor"), product.get("product"), product.get("versions"))))
        if label:
            event.add_attribute("text", label, to_ids=False, category="Other",
                                comment=evidence_comment(f"affected product ({product.get('origin', 'found')})", product.get("evidence"), text))
    for reference in result.get("references", []):
        if reference["type"] == "url":
            event.add_attribute("link", reference["value"], to_ids=False, comment=f"reference ({reference['kind']})")
    payload = json.loads(event.to_json())
    check = MISPEvent()
    check.from_dict(**payload)  # PyMISP's own model reads it back (types, categories, tags)
    return payload
