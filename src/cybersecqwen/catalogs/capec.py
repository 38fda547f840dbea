"""MITRE CAPEC STIX 2.1: attack patterns with their CWE links and mitigations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cybersecqwen.catalogs.files import external_id, stix_objects
from cybersecqwen.catalogs import registry


@dataclass(frozen=True)
class AttackPattern:
    capec_id: str
    name: str
    description: str
    cwe_ids: tuple[str, ...]
    mitigations: tuple[str, ...]
    prerequisites: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()  # "High: ..." per level
    consequences: tuple[str, ...] = ()  # "Confidentiality: Read Data"
    severity: str = ""


@registry.parser("mitre-capec", "stix-capec-3.9.json")
def parse_capec(path: Path) -> list[AttackPattern]:
    objects = stix_objects(path)
    by_id = {o["id"]: o for o in objects}
    mitigations: dict[str, list[str]] = {}
    for o in objects:
        if o.get("type") == "relationship" and o.get("relationship_type") == "mitigates":
            mitigation = by_id.get(o.get("source_ref"), {})
            text = mitigation.get("description") or mitigation.get("name")
            if text:
                mitigations.setdefault(o["target_ref"], []).append(text)
    patterns = []
    for o in objects:
        if o.get("type") != "attack-pattern" or o.get("x_capec_status") == "Deprecated" or o.get("revoked"):
            continue
        capec_id = external_id(o, "capec")
        if not capec_id:
            continue
        cwe_ids = tuple(r["external_id"] for r in o.get("external_references", []) if r.get("source_name") == "cwe")
        skills = tuple(f"{level}: {text}" for level, text in (o.get("x_capec_skills_required") or {}).items())
        consequences = tuple(f"{scope.replace('_', ' ')}: {impact}" for scope, impacts in (o.get("x_capec_consequences") or {}).items()
                             for impact in impacts)
        patterns.append(AttackPattern(capec_id, o.get("name", ""), o.get("description", ""), cwe_ids,
                                      tuple(sorted(mitigations.get(o["id"], []))), tuple(o.get("x_capec_prerequisites", [])),
                                      skills, consequences, o.get("x_capec_typical_severity", "")))
    return sorted(patterns, key=lambda p: int(p.capec_id.split("-")[1]))
