"""MITRE CWE catalog XML (schema cwe-7): weaknesses with their relationships, consequences and mapping notes."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.catalogs import registry

SIMPLIFIED_VIEW = "1003"  # NVD's view; CTI-RCM's gold CWEs are NVD's (957 of 1,000 lie in it)


@dataclass(frozen=True)
class Weakness:
    cwe_id: str  # "CWE-79"
    name: str
    description: str
    abstraction: str
    status: str
    parents: tuple[str, ...] = ()  # ChildOf in the Research view (1000)
    consequences: tuple[str, ...] = ()  # "Confidentiality: Read Application Data"
    observed_examples: tuple[tuple[str, str], ...] = ()  # (CVE id, description of how it shows this weakness)
    mapping_usage: str = ""  # Allowed, Allowed-with-Review, Discouraged, Prohibited
    simplified: bool = False  # a member of view 1003, "Weaknesses for Simplified Mapping of Published Vulnerabilities"
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Category:
    cwe_id: str
    name: str
    summary: str
    members: tuple[str, ...]


def parse_cwe_categories(path: Path) -> dict[str, Category]:
    """Categories group weaknesses by theme; they are never a valid root-cause mapping themselves."""
    categories = {}
    try:
        for _, element in ET.iterparse(path, events=("end",)):
            if element.tag.endswith("}Category"):
                members = tuple(f"CWE-{m.get('CWE_ID')}" for m in element.iterfind("{*}Relationships/{*}Has_Member"))
                cwe_id = f"CWE-{element.get('ID')}"
                categories[cwe_id] = Category(cwe_id, element.get("Name", ""), _text(element.find("{*}Summary")), members)
                element.clear()
    except ET.ParseError as exc:
        line, column = exc.position
        raise CybersecqwenError(f"{path} is malformed XML at line {line} column {column}: {exc}") from None
    return categories


def _text(element: ET.Element | None) -> str:
    return re.sub(r"\s+", " ", "".join(element.itertext())).strip() if element is not None else ""


@registry.parser("mitre-cwe", "cwec_v4.14.xml")
def parse_cwe_catalog(path: Path) -> dict[str, Weakness]:
    weaknesses: dict[str, Weakness] = {}
    simplified: set[str] = set()  # view 1003: its top level (the View's members) and their children (View_ID 1003 links)
    try:
        for _, element in ET.iterparse(path, events=("end",)):
            if element.tag.endswith("}View") and element.get("ID") == SIMPLIFIED_VIEW:
                simplified.update(f"CWE-{m.get('CWE_ID')}" for m in element.iterfind("{*}Members/{*}Has_Member"))
                continue
            if not element.tag.endswith("}Weakness"):
                continue
            cwe_id = f"CWE-{element.get('ID')}"
            if any(r.get("View_ID") == SIMPLIFIED_VIEW for r in element.iterfind("{*}Related_Weaknesses/{*}Related_Weakness")):
                simplified.add(cwe_id)
            parents = tuple(  # the primary parent first
                f"CWE-{r.get('CWE_ID')}" for r in sorted(element.iterfind("{*}Related_Weaknesses/{*}Related_Weakness"),
                                                         key=lambda r: r.get("Ordinal") != "Primary")
                if r.get("Nature") == "ChildOf" and r.get("View_ID") == "1000"
            )
            consequences = []
            for consequence in element.iterfind("{*}Common_Consequences/{*}Consequence"):
                scopes = [_text(s) for s in consequence.iterfind("{*}Scope")]
                impacts = [_text(i) for i in consequence.iterfind("{*}Impact")]
                if scopes and impacts:
                    consequences.append(f"{'/'.join(scopes)}: {'; '.join(impacts)}")
            observed = tuple((_text(o.find("{*}Reference")), _text(o.find("{*}Description")))
                             for o in element.iterfind("{*}Observed_Examples/{*}Observed_Example"))
            weaknesses[cwe_id] = Weakness(
                cwe_id=cwe_id,
                name=element.get("Name", ""),
                description=_text(element.find("{*}Description")),
                abstraction=element.get("Abstraction", ""),
                status=element.get("Status", ""),
                parents=parents,
                consequences=tuple(consequences),
                observed_examples=observed,
                mapping_usage=_text(element.find("{*}Mapping_Notes/{*}Usage")),
                # Read by the knowledge index only (the corpus does not train on them).
                extra={"extended_description": _text(element.find("{*}Extended_Description")),
                       "likelihood": _text(element.find("{*}Likelihood_Of_Exploit")),
                       "introduction": tuple(" ".join(filter(None, (_text(i.find("{*}Phase")), _text(i.find("{*}Note")))))
                                             for i in element.iterfind("{*}Modes_Of_Introduction/{*}Introduction")),
                       "mitigations": tuple(" ".join(filter(None, (_text(m.find("{*}Phase")) + ":" if m.find("{*}Phase") is not None else "",
                                                                   _text(m.find("{*}Description")))))
                                            for m in element.iterfind("{*}Potential_Mitigations/{*}Mitigation")),
                       "consequence_notes": tuple(_text(c.find("{*}Note")) for c in element.iterfind("{*}Common_Consequences/{*}Consequence")
                                                  if c.find("{*}Note") is not None),
                       "related_attack_patterns": tuple(f"CAPEC-{r.get('CAPEC_ID')}" for r in
                                                        element.iterfind("{*}Related_Attack_Patterns/{*}Related_Attack_Pattern"))},
            )
            element.clear()
    except ET.ParseError as exc:
        line, column = exc.position
        raise CybersecqwenError(f"{path} is malformed XML at line {line} column {column}: {exc}") from None
    if not weaknesses:
        raise CybersecqwenError(f"{path} holds no CWE Weakness elements; is it the CWE catalog XML?")
    return {cwe_id: replace(w, simplified=True) if cwe_id in simplified else w for cwe_id, w in weaknesses.items()}


def in_simplified_view(cwe_id: str, catalog: dict[str, Weakness]) -> str | None:
    """The nearest entry of view 1003 at or above `cwe_id` along ChildOf (Research view; primary parents first,
    breadth-first), or None where the catalog relates it to none (a pillar such as CWE-284, an unknown id).
    NVD maps a CNA's more specific CWE this way (CWE-121 -> CWE-787, CWE-80 -> CWE-79)."""
    queue, seen = [cwe_id], {cwe_id}
    while queue:
        current = queue.pop(0)
        weakness = catalog.get(current)
        if weakness is None:
            continue
        if weakness.simplified:
            return current
        for parent in weakness.parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return None
