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
    platforms: tuple[str, ...] = ()  # "Windows", "Linux"
    detection: str = ""  # the technique's own detection notes (x_mitre_detection)


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
    mitigation_notes: dict[tuple[str, str], str] = field(default_factory=dict)  # (M-id, T-id) -> how it mitigates
    # Technique ids no longer active: revoked ones -> the id that replaced them; deprecated ones -> "" (no successor)
    retired: dict[str, str] = field(default_factory=dict)
    # DET-id -> (data source, data component, what the analytic looks for), from its analytics' log sources
    detection_details: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def main_techniques(self) -> list[tuple[str, str]]:
        """(T-id, name) of main techniques, sorted by name: the shape of CTI-ATE's reference list."""
        return sorted(((t.technique_id, t.name) for t in self.techniques.values() if "." not in t.technique_id),
                      key=lambda pair: pair[1].lower())


@registry.parser("mitre-attack-enterprise", "enterprise-attack-v18.1.json.gz")
def parse_attack(path: Path) -> AttackCatalog:
    catalog = AttackCatalog()
    objects = stix_objects(path)
    stix_to_id: dict[str, str] = {}
    by_stix = {o["id"]: o for o in objects if "id" in o}
    analytics: list[tuple[str, list[str]]] = []
    retired_stix: dict[str, str] = {}  # STIX id of a revoked or deprecated technique -> its ATT&CK id
    for o in objects:
        if o.get("type") == "attack-pattern" and not is_active(o) and external_id(o, "mitre-attack"):
            retired_stix[o["id"]] = external_id(o, "mitre-attack")
        if not is_active(o):
            continue
        kind = o.get("type")
        if kind == "attack-pattern":
            technique_id = external_id(o, "mitre-attack")
            if technique_id:
                tactics = tuple(p["phase_name"] for p in o.get("kill_chain_phases", []) if p.get("kill_chain_name") == "mitre-attack")
                url = next((r.get("url", "") for r in o.get("external_references", []) if r.get("source_name") == "mitre-attack"), "")
                catalog.techniques[technique_id] = Technique(technique_id, o.get("name", ""), clean(o.get("description", "")), tactics, url,
                                                             tuple(o.get("x_mitre_platforms", [])), clean(o.get("x_mitre_detection", "")))
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
                analytics.append((strategy_id, o.get("x_mitre_analytic_refs", [])))
        elif kind == "x-mitre-tactic":
            catalog.tactics[o.get("x_mitre_shortname", "")] = o.get("name", "")
    catalog.retired = {old: "" for old in retired_stix.values()}
    for o in objects:
        if o.get("type") == "relationship" and o.get("relationship_type") == "revoked-by" and o.get("source_ref") in retired_stix:
            catalog.retired[retired_stix[o["source_ref"]]] = stix_to_id.get(o.get("target_ref"), "")
        if o.get("type") != "relationship" or not is_active(o):
            continue
        source, target = stix_to_id.get(o.get("source_ref")), stix_to_id.get(o.get("target_ref"))
        if not source or not target or not target.startswith("T"):
            continue
        if o.get("relationship_type") == "uses" and source[0] in "GS" and o.get("description"):
            catalog.procedures.append(Procedure(source, target, clean(o["description"])))
        elif o.get("relationship_type") == "mitigates" and source.startswith("M"):
            catalog.mitigates.append((source, target))
            if o.get("description"):
                catalog.mitigation_notes[(source, target)] = clean(o["description"])
        elif o.get("relationship_type") == "detects" and source.startswith("DET"):
            catalog.detects.append((source, target))
    for strategy_id, refs in analytics:  # what each detection strategy reads: data source / component, and why
        details = []
        for ref in refs:
            analytic = by_stix.get(ref, {})
            for source in analytic.get("x_mitre_log_source_references", []):
                component = by_stix.get(source.get("x_mitre_data_component_ref"), {})
                data_source = by_stix.get(component.get("x_mitre_data_source_ref"), {})
                details.append((data_source.get("name", ""), component.get("name", ""), clean(analytic.get("description", ""))))
        catalog.detection_details[strategy_id] = list(dict.fromkeys(details))
    catalog.procedures.sort(key=lambda p: (p.actor_id, p.technique_id, p.text))
    catalog.mitigates.sort()
    catalog.detects.sort()
    return catalog
