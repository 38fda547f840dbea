"""Tiny hand-written files in each source format, beside the CTI-Bench fixture mirror."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

CWE_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Weakness_Catalog xmlns="http://cwe.mitre.org/cwe-7" Name="CWE" Version="4.14">
<Weaknesses>
{weaknesses}
</Weaknesses>
{categories}
<Views><View ID="1003" Name="Weaknesses for Simplified Mapping of Published Vulnerabilities" Type="Graph" Status="Incomplete">
<Members><Has_Member CWE_ID="20" View_ID="1003"/><Has_Member CWE_ID="787" View_ID="1003"/></Members></View></Views>
</Weakness_Catalog>
"""
WEAKNESS = """<Weakness ID="{id}" Name="{name}" Abstraction="Base" Structure="Simple" Status="Stable">
<Description>{description}</Description>
<Related_Weaknesses>{parent}</Related_Weaknesses>
<Common_Consequences><Consequence><Scope>Integrity</Scope><Impact>Modify Memory</Impact></Consequence></Common_Consequences>
<Observed_Examples><Observed_Example><Reference>CVE-2099-0001</Reference><Description>{observed}</Description></Observed_Example></Observed_Examples>
<Mapping_Notes><Usage>Allowed</Usage></Mapping_Notes>
</Weakness>"""
CATEGORY = """<Categories><Category ID="1019" Name="Validate Inputs" Status="Draft"><Summary>Weaknesses about input validation.</Summary>
<Relationships><Has_Member CWE_ID="20" View_ID="1008"/><Has_Member CWE_ID="79" View_ID="1008"/></Relationships></Category></Categories>"""
CWES = [
    ("20", "Improper Input Validation", "The product does not validate input properly before use.", None),
    ("79", "Improper Neutralization of Input During Web Page Generation", "The product does not neutralize user input placed in web pages.", "20"),
    ("89", "Improper Neutralization of Special Elements used in an SQL Command", "The product builds SQL commands from unneutralized input.", "20"),
    ("416", "Use After Free", "The product reuses memory after it has been freed.", "20"),
    ("787", "Out-of-bounds Write", "The product writes data past the end of the intended buffer.", "20"),
    ("22", "Path Traversal", "The product uses external input to build a pathname without restricting it.", "20"),
    # Outside view 1003 (the view lists 20 and 787 as members and the rest as their children): taught as CWE-787.
    ("121", "Stack-based Buffer Overflow", "The product writes past a buffer allocated on the stack.", "787"),
]
SIMPLIFIED_CHILDREN = ("79", "89", "416", "22")  # members of view 1003 below CWE-20


def write_cve_records(path: Path, records: list[tuple[str, list[str], str, str]]) -> None:
    with gzip.open(path, "wt") as handle:
        for cve_id, cwes, vector, text in records:
            handle.write(json.dumps({"cveMetadata": {"cveId": cve_id}, "containers": {"cna": {
                "descriptions": [{"lang": "en", "value": text}],
                "problemTypes": [{"descriptions": [{"cweId": c, "type": "CWE"} for c in cwes]}],
                "metrics": [{"cvssV3_1": {"vectorString": vector}}]}}}) + "\n")


def stix(kind, ident, **fields):
    return {"type": kind, "id": f"{kind}--{ident}", **fields}


def attack_ref(external_id, path):
    return [{"source_name": "mitre-attack", "external_id": external_id, "url": f"https://attack.mitre.org/{path}"}]


def attack_bundle() -> dict:
    tactics = [stix("x-mitre-tactic", f"t{i}", name=name, x_mitre_shortname=short)
               for i, (name, short) in enumerate([("Execution", "execution"), ("Persistence", "persistence"),
                                                  ("Discovery", "discovery"), ("Command and Control", "command-and-control"),
                                                  ("Defense Evasion", "defense-evasion")])]
    techniques = []
    for i, (tid, name, tactic) in enumerate([("T1059", "Command and Scripting Interpreter", "execution"),
                                             ("T1083", "File and Directory Discovery", "discovery"),
                                             ("T1071", "Application Layer Protocol", "command-and-control"),
                                             ("T1070", "Indicator Removal", "defense-evasion"),
                                             ("T1547", "Boot or Logon Autostart Execution", "persistence")]):
        techniques.append(stix("attack-pattern", f"p{i}", name=name, description=f"Adversaries may use {name.lower()} to reach their goals.(Citation: X)",
                               kill_chain_phases=[{"kill_chain_name": "mitre-attack", "phase_name": tactic}],
                               external_references=attack_ref(tid, f"techniques/{tid}")))
    techniques.append(stix("attack-pattern", "old", name="Old Technique", revoked=True, external_references=attack_ref("T1000", "techniques/T1000")))
    group = stix("intrusion-set", "g1", name="APT28", aliases=["APT28", "Fancy Bear", "Sofacy"],
                 description="[APT28](https://attack.mitre.org/groups/G0007) is a threat group attributed to a military intelligence unit that has operated since at least 2004 against governments and militaries in Europe.",
                 external_references=attack_ref("G0007", "groups/G0007"))
    malware = stix("malware", "s1", name="3PARA RAT", x_mitre_aliases=["3PARA RAT"], description="3PARA RAT is a remote access tool.",
                   external_references=attack_ref("S0066", "software/S0066"))
    mitigations = [stix("course-of-action", f"m{i}", name=name, description=name, external_references=attack_ref(mid, f"mitigations/{mid}"))
                   for i, (mid, name) in enumerate([("M1038", "Execution Prevention"), ("M1040", "Behavior Prevention on Endpoint"),
                                                    ("M1031", "Network Intrusion Prevention"), ("M1022", "Restrict File and Directory Permissions")])]
    relationships = [
        stix("relationship", "r1", relationship_type="uses", source_ref="intrusion-set--g1", target_ref="attack-pattern--p0",
             description="[APT28](https://attack.mitre.org/groups/G0007) has used PowerShell scripts.(Citation: Y)"),
        stix("relationship", "r2", relationship_type="uses", source_ref="malware--s1", target_ref="attack-pattern--p2",
             description="3PARA RAT uses HTTP for command and control."),
        stix("relationship", "r3", relationship_type="uses", source_ref="malware--s1", target_ref="attack-pattern--p1",
             description="3PARA RAT has a command to list files in a directory."),
        stix("relationship", "r4", relationship_type="mitigates", source_ref="course-of-action--m0", target_ref="attack-pattern--p0",
             description="Block script execution."),
    ]
    return {"type": "bundle", "id": "bundle--x", "objects": tactics + techniques + [group, malware] + mitigations + relationships}


@pytest.fixture
def source_mirror(fixture_mirror: Path) -> Path:
    root = fixture_mirror
    (root / "mitre-cwe").mkdir()
    weaknesses = [WEAKNESS.format(id=i, name=n, description=d, observed=f"Example product {i} shows this weakness in its parser code path.",
                                  parent=(f'<Related_Weakness Nature="ChildOf" CWE_ID="{p}" View_ID="1000" Ordinal="Primary"/>' if p else "")
                                  + (f'<Related_Weakness Nature="ChildOf" CWE_ID="{p}" View_ID="1003" Ordinal="Primary"/>'
                                     if i in SIMPLIFIED_CHILDREN else ""))
                  for i, n, d, p in CWES]
    (root / "mitre-cwe" / "cwec_v4.14.xml").write_text(CWE_XML.format(weaknesses="\n".join(weaknesses), categories=CATEGORY))
    (root / "mitre-capec").mkdir()
    capec = {"type": "bundle", "id": "bundle--c", "objects": [
        stix("attack-pattern", "c1", name="SQL Injection", description="An attacker injects SQL.",
             external_references=[{"source_name": "capec", "external_id": "CAPEC-66"}, {"source_name": "cwe", "external_id": "CWE-89"}]),
        stix("attack-pattern", "c2", name="Old Pattern", x_capec_status="Deprecated",
             external_references=[{"source_name": "capec", "external_id": "CAPEC-1"}]),
    ]}
    (root / "mitre-capec" / "stix-capec-3.9.json").write_text(json.dumps(capec))
    (root / "mitre-attack-enterprise").mkdir()
    with gzip.open(root / "mitre-attack-enterprise" / "enterprise-attack-v18.1.json.gz", "wt") as handle:
        json.dump(attack_bundle(), handle)
    (root / "cve-vulnrichment-2022-2023").mkdir()
    records = [
        ("CVE-2023-0001", ["CWE-89"], "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
         "SQL injection in the login form of Acme Portal 2.1 lets remote attackers read the user database."),
        ("CVE-2023-0002", ["CWE-79"], "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N/E:P/RL:O/RC:C",
         "Reflected cross-site scripting in the search page of Widget CMS 5 allows injecting script into pages."),
        # The planted benchmark item: the fixture CTI-RCM row 0, word for word.
        ("CVE-2023-0003", ["CWE-416"], "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H", "A use-after-free in the kernel."),
        ("CVE-2023-0004", ["CWE-787", "CWE-20"], "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H",
         "Two labels: this record teaches no single answer and is skipped."),
    ]
    write_cve_records(root / "cve-vulnrichment-2022-2023" / "cve-records-2022-2023.jsonl.gz", records)
    (root / "cve-vulnrichment-2024").mkdir()
    write_cve_records(root / "cve-vulnrichment-2024" / "cve-records-2024.jsonl.gz", [
        ("CVE-2024-0101", ["CWE-121"], "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
         "A stack-based buffer overflow in the HTTP parser of Gizmo Router 3.2 lets remote attackers run code."),
        ("CVE-2024-0102", ["CWE-99999"], "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",  # a label the catalog does not hold
         "An information disclosure in the status page of Gizmo Router 3.2 reveals the admin password hash."),
    ])
    (root / "tram-attack-sentences").mkdir()
    (root / "tram-attack-sentences" / "single_label.json").write_text(json.dumps([
        {"text": "The malware runs PowerShell commands.", "label": "T1059.001", "doc_title": "Report A"},
        {"text": "It lists the files in the user's documents folder.", "label": "T1083", "doc_title": "Report A"},
    ]))
    (root / "misp-galaxy-threat-actor").mkdir()
    (root / "misp-galaxy-threat-actor" / "threat-actor.json").write_text(json.dumps({"values": [
        {"value": "Lazarus Group", "description": "Lazarus Group is a threat group attributed to a state that has targeted banks, "
                                                    "cryptocurrency exchanges and media companies for many years.",
         "meta": {"synonyms": ["Hidden Cobra"], "country": "KP"}},
    ]}))
    (root / "cybersecqwen-release-rcm-2021").mkdir()
    (root / "cybersecqwen-release-rcm-2021" / "rcm_2021_train.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Analyze ...  CVE Description: Path traversal in the upload handler of FileBox 1.2 lets attackers write outside the upload folder. ",
         "response": "The CVE description characterizes a software weakness. This maps to CWE-22.\n\nCWE-22"},
        {"prompt": "Analyze ...  CVE Description: Stored XSS in the admin page. ", "response": "x\n\nCWE-79"},  # a CTI-RCM fixture item
    ]) + "\n")
    return root


RECIPE = """name: fixture
model: {{base: embedded}}
data:
  sources: [mitre-cwe, mitre-capec, mitre-attack-enterprise, cve-vulnrichment-2022-2023, tram-attack-sentences,
            misp-galaxy-threat-actor, cybersecqwen-release-rcm-2021]
  license_allow: [Apache-2.0, CC0-1.0, "CC0-1.0 OR BSD-2-Clause", MITRE-CWE-terms, MITRE-CAPEC-terms, MITRE-ATTACK-terms]
  tasks:
    cti-mcq: {{weight: 1}}
    cti-rcm: {{weight: 1}}
    cti-vsp: {{weight: 1}}
    cti-ate: {{weight: 1}}
    cti-taa: {{weight: 1}}
    cwe-classify: {{weight: 1}}
    cti-qa: {{weight: 1}}
  val_fraction: 0.2
  max_tokens: {max_tokens}
  seed: 0
"""


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(max_tokens=4096))
    return path
