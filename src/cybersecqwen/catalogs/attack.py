"""MITRE ATT&CK Enterprise STIX: techniques, tactics, groups, software, mitigations and procedure examples.

Revoked and deprecated objects are skipped; a relationship counts only when both ends are active.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cybersecqwen.catalogs.files import external_id, is_active, stix_objects
from cybersecqwen.catalogs import registry

CITATION = re.compile(r"\(Citation:[^)]*\)")
LINK = re.compile(r"\[([^\]]+)\]\(https?://[^)]+\)")


def clean(text: str) -> str:
    """ATT&CK prose without citation markers, markdown links reduced to their text."""
    return re.sub(r"\s+", " ", LINK.sub(r"\1", CITATION.sub("", text or ""))).strip()


@dataclass(frozen=True)
class Technique:
    technique_id: str  # T1059 or T1059.003
    name: str
    description: str
    tactics: tuple[str, ...]  # "execution", "defense-evasion"
    url: str


@dataclass(frozen=True)
class Actor:  # intrusion set (group) or software
    attack_id: str  # G0007 / S0066
    name: str
    aliases: tuple[str, ...]
    description: str
    kind: str  # group | malware | tool
    url: str


@dataclass(frozen=True)
class Procedure:
    actor_id: str
    technique_id: str
    text: str


@dataclass
class AttackCatalog:
    techniques: dict[str, Technique] = field(default_factory=dict)
    actors: dict[str, Actor] = field(default_factory=dict)
    mitigations: dict[str, tuple[str, str]] = field(default_factory=dict)  # M1042 -> (name, description)
    mitigates: list[tuple[str, str]] = field(default_factory=list)  # (M-id, technique id)
    detection_strategies: dict[str, str] = field(default_factory=dict)  # DET0103 -> name
    detects: list[tuple[str, str]] = field(default_factory=list)  # (DET-id, technique id)
    procedures: list[Procedure] = field(default_factory=list)
    tactics: dict[str, str] = field(default_factory=dict)  # shortname -> display name

    def main_techniques(self) -> list[tuple[str, str]]:
        """(T-id, name) of main techniques, sorted by name: the shape of CTI-ATE's reference list."""
        return sorted(((t.technique_id, t.name) for t in self.techniques.values() if "." not in t.technique_id),
                      key=lambda pair: pair[1].lower())


@registry.parser("mitre-attack-enterprise", "enterprise-attack-v18.1.json.gz")
def parse_attack(path: Path) -> AttackCatalog:
    catalog = AttackCatalog()
    objects = stix_objects(path)
    stix_to_id: dict[str, str] = {}
    for o in objects:
        if not is_active(o):
            continue
        kind = o.get("type")
        if kind == "attack-pattern":
            technique_id = external_id(o, "mitre-attack")
            if technique_id:
                tactics = tuple(p["phase_name"] for p in o.get("kill_chain_phases", []) if p.get("kill_chain_name") == "mitre-attack")
                url = next((r.get("url", "") for r in o.get("external_references", []) if r.get("source_name") == "mitre-attack"), "")
                catalog.techniques[technique_id] = Technique(technique_id, o.get("name", ""), clean(o.get("description", "")), tactics, url)
                stix_to_id[o["id"]] = technique_id
        elif kind in ("intrusion-set", "malware", "tool"):
            attack_id = external_id(o, "mitre-attack")
            if attack_id:
                names = o.get("aliases") or o.get("x_mitre_aliases") or []
                url = next((r.get("url", "") for r in o.get("external_references", []) if r.get("source_name") == "mitre-attack"), "")
                catalog.actors[attack_id] = Actor(attack_id, o.get("name", ""), tuple(n for n in names if n != o.get("name")),
                                                  clean(o.get("description", "")), "group" if kind == "intrusion-set" else kind, url)
                stix_to_id[o["id"]] = attack_id
        elif kind == "course-of-action":
            mitigation_id = external_id(o, "mitre-attack")
            if mitigation_id and mitigation_id.startswith("M"):
                catalog.mitigations[mitigation_id] = (o.get("name", ""), clean(o.get("description", "")))
                stix_to_id[o["id"]] = mitigation_id
        elif kind == "x-mitre-detection-strategy":
            strategy_id = external_id(o, "mitre-attack")
            if strategy_id:
                catalog.detection_strategies[strategy_id] = o.get("name", "")
                stix_to_id[o["id"]] = strategy_id
        elif kind == "x-mitre-tactic":
            catalog.tactics[o.get("x_mitre_shortname", "")] = o.get("name", "")
    for o in objects:
        if o.get("type") != "relationship" or not is_active(o):
            continue
        source, target = stix_to_id.get(o.get("source_ref")), stix_to_id.get(o.get("target_ref"))
        if not source or not target or not target.startswith("T"):
            continue
        if o.get("relationship_type") == "uses" and source[0] in "GS" and o.get("description"):
            catalog.procedures.append(Procedure(source, target, clean(o["description"])))
        elif o.get("relationship_type") == "mitigates" and source.startswith("M"):
            catalog.mitigates.append((source, target))
        elif o.get("relationship_type") == "detects" and source.startswith("DET"):
            catalog.detects.append((source, target))
    catalog.procedures.sort(key=lambda p: (p.actor_id, p.technique_id, p.text))
    catalog.mitigates.sort()
    catalog.detects.sort()
    return catalog
