"""MITRE CWE catalog XML (schema cwe-7): weaknesses with their relationships, consequences and mapping notes."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.catalogs import registry


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
    try:
        for _, element in ET.iterparse(path, events=("end",)):
            if not element.tag.endswith("}Weakness"):
                continue
            cwe_id = f"CWE-{element.get('ID')}"
            parents = tuple(
                f"CWE-{r.get('CWE_ID')}" for r in element.iterfind("{*}Related_Weaknesses/{*}Related_Weakness")
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
    return weaknesses
