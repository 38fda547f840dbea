"""Issue 15: advisory and report analysis, on the fixture catalogs and heads trained on the synthetic corpus (no
language model: the properties here are the analysis's own; the fused path is the structured endpoints')."""

from __future__ import annotations

import json
import socket

import pytest
from fastapi.testclient import TestClient

from cybersecqwen.errors import CybersecqwenError
from tests.heads.conftest import heads_corpus, trained_heads  # noqa: F401 - fixtures
from tests.serve.test_promises import source_mirror  # noqa: F401

ADVISORY = """<html><head><script>window.stolen = document.cookie</script><style>p {color: red}</style></head><body>
<h1>Advisory ACME-2024-07</h1>
<p>SQL injection (CVE-2024-12345) in Acme Portal lets remote attackers execute arbitrary SQL commands via the id parameter
of the login query.</p>
<p>APT28 exploited it; the implant beacons to its C2 server over HTTPS at hxxps://update-check[.]info/gate.php.</p>
<p>Indicators: 203.0.113[.]45, 10.0.0.5, build 10.2.3.4, https://cdn.example.net/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.bin,
C:\\Users\\Public\\svc.exe, HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\updater.</p>
<p>Unclosed <b>markup <i>is fine</body>"""


@pytest.fixture
def service(trained_heads, source_mirror):  # noqa: F811
    from cybersecqwen.heads import load_heads
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService

    return CtiService(None, load_catalogs(source_mirror), load_heads(trained_heads))


def test_an_html_advisory_gives_every_field_with_evidence_into_the_text(service):
    from cybersecqwen.answering.advisory import analyze

    result = analyze(service, ADVISORY, "html")
    text = result["text"]
    assert "window.stolen" not in text and "color: red" not in text  # scripts and styles are not text
    assert [c["cve_id"] for c in result["cves"]] == ["CVE-2024-12345"]
    assert text[slice(*result["cves"][0]["evidence"])] == "CVE-2024-12345"
    weakness = result["weaknesses"][0]
    assert weakness["cwe_id"] == "CWE-89" and "SQL" in text[slice(*weakness["evidence"])]
    assert {"capec_id": "CAPEC-66", "name": "SQL Injection"} in weakness["capec"]  # CAPEC's own CWE link
    assert result["cvss"]["vector"].startswith("CVSS:3.1/")
    assert "T1071" in [t["technique_id"] for t in result["techniques"]]
    assert [(a["name"], a["external_id"]) for a in result["actors"]] == [("APT28", "G0007")]
    iocs = {(i["type"], i["value"]): i for i in result["iocs"]}
    url = iocs[("url", "https://update-check.info/gate.php")]
    assert url["defanged"] and text[slice(*url["evidence"])] == "hxxps://update-check[.]info/gate.php"
    assert iocs[("ipv4", "203.0.113.45")]["flags"] == ["documentation"] and iocs[("ipv4", "10.0.0.5")]["flags"] == ["private"]
    assert "version-like" in iocs[("ipv4", "10.2.3.4")]["flags"]  # flagged, not dropped
    assert not any(kind == "sha256" for kind, _ in iocs)  # the hash is part of a URL, reported with it
    assert ("file_path", "C:\\Users\\Public\\svc.exe") in iocs
    assert ("registry_key", "HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\updater") in iocs
    for field in ("cves", "weaknesses", "techniques", "actors", "iocs"):
        for item in result[field]:
            start, end = item["evidence"]
            assert 0 <= start < end <= len(text) and 0 < item["confidence"] <= 1
    assert result["summary"]["needs_review"] and result["summary"]["text"] and result["needs_review"]


def test_a_text_with_no_cti_content_gets_empty_lists_not_guesses(service):
    from cybersecqwen.answering.advisory import analyze

    result = analyze(service, "The quarterly picnic moved to Friday. Bring a salad and sunscreen.", "text")
    assert all(result[field] == [] for field in ("cves", "weaknesses", "techniques", "actors", "iocs"))
    assert result["cvss"] is None


def test_bad_input_is_named(service, tmp_path):
    from cybersecqwen.answering.advisory import analyze, analyze_files

    with pytest.raises(CybersecqwenError, match="empty"):
        analyze(service, "  \n\t ", "text")
    with pytest.raises(CybersecqwenError, match="binary"):
        analyze(service, b"\x7fELF\x00\x00\x01", "text")
    with pytest.raises(CybersecqwenError, match="unknown format"):
        analyze(service, "x", "pdf")
    big = tmp_path / "big.txt"
    with big.open("wb") as handle:
        handle.truncate(20_000_000)  # a 20 MB file: refused before it is read or any model loads
    with pytest.raises(CybersecqwenError, match=r"20\.0 MB; analyze takes documents up to 5 MB"):
        next(analyze_files([big], None, None, "embedded", "auto", None, False, None, False))


def test_long_documents_are_chunked_and_merged_without_duplicates(service):
    from cybersecqwen.answering import advisory

    paragraph = "SQL injection in the login query lets remote attackers run arbitrary SQL commands (CVE-2024-0001).\n\n"
    result = advisory.analyze(service, paragraph * 400, "text")  # ~40,000 characters: several chunks
    assert result["chunks"] > 1
    assert [c["cve_id"] for c in result["cves"]] == ["CVE-2024-0001"] and len({w["cwe_id"] for w in result["weaknesses"]}) == len(result["weaknesses"])
    pieces = advisory.chunks("abcdefghij" * 100, 300, 50)
    assert pieces[0][0] == 0 and all(b[0] < a[0] + len(a[1]) for a, b in zip(pieces, pieces[1:]))  # they overlap
    assert "".join(p[1] for p in pieces).count("j") >= 100


def test_stix_bundle_parses_back_with_valid_patterns(service):
    import stix2

    from cybersecqwen.answering.advisory import analyze, to_stix

    bundle = stix2.parse(to_stix(analyze(service, ADVISORY, "html"), "ACME-2024-07"))
    kinds = {o.type for o in bundle.objects}
    assert {"report", "vulnerability", "attack-pattern", "threat-actor", "indicator", "relationship"} <= kinds
    vulnerability = next(o for o in bundle.objects if o.type == "vulnerability")
    assert {(r.source_name, r.external_id) for r in vulnerability.external_references} >= {("cve", "CVE-2024-12345"), ("cwe", "CWE-89")}
    patterns = {o.pattern for o in bundle.objects if o.type == "indicator"}
    assert "[url:value = 'https://update-check.info/gate.php']" in patterns
    assert "[windows-registry-key:key = 'HKLM\\\\Software\\\\Microsoft\\\\Windows\\\\CurrentVersion\\\\Run\\\\updater']" in patterns
    assert {"CAPEC-66"} <= {r.external_id for o in bundle.objects if o.type == "attack-pattern" for r in o.external_references}
    empty = stix2.parse(to_stix(analyze(service, "Nothing to see here.", "text")))
    assert sorted(o.type for o in empty.objects) == ["identity", "report"]  # a report of nothing, still valid STIX


def test_nothing_in_the_text_is_ever_fetched(service, monkeypatch):
    from cybersecqwen.answering.advisory import analyze, to_stix

    connects = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: connects.append(address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: connects.append(address) or 0)
    to_stix(analyze(service, ADVISORY, "html"))
    assert connects == []


def test_the_endpoint_has_the_servers_limits_and_auth(service, tmp_path):
    from cybersecqwen.serve.app import ServerSettings, create_app

    app = create_app(None, service, ServerSettings(model_name="heads", api_key="k", audit_log=tmp_path / "audit.jsonl"))
    http = TestClient(app, base_url="http://localhost")
    body = {"text": ADVISORY, "format": "html", "stix": True}
    assert http.post("/v1/advisory/analyze", json=body).status_code == 401
    reply = http.post("/v1/advisory/analyze", json=body, headers={"Authorization": "Bearer k"})
    assert reply.status_code == 200 and reply.json()["cves"][0]["cve_id"] == "CVE-2024-12345"
    assert reply.json()["stix"]["type"] == "bundle"
    huge = http.post("/v1/advisory/analyze", content=json.dumps({"text": "x" * 2_000_000}), headers={"Authorization": "Bearer k",
                                                                                                    "Content-Type": "application/json"})
    assert huge.status_code == 413


def test_affected_products_known_and_unseen_with_their_version_ranges():
    from cybersecqwen.answering.affected import ProductIndex

    index = ProductIndex([("Fortinet", "FortiAnalyzer"), ("Fortinet", "FortiAnalyzer"), ("Lenovo", "Diagnostics"), ("n/a", "n/a")])
    text = ("A buffer overflow in Fortinet FortiAnalyzer version 7.0.2 and below, and in Lenovo Diagnostics versions prior to 4.45, "
            "and in Acme Portal before 2.4.2. Diagnostics of the incident continue.")
    found = {f["product"]: f for f in index.find(text)}
    assert set(found) == {"FortiAnalyzer", "Diagnostics", "Acme Portal"}  # "Diagnostics of the incident" is prose, not the product
    assert (found["FortiAnalyzer"]["vendor"], found["FortiAnalyzer"]["versions"]) == ("Fortinet", "7.0.2 and below")
    assert (found["Diagnostics"]["vendor"], found["Diagnostics"]["versions"]) == ("Lenovo", "prior to 4.45")
    assert (found["Acme Portal"]["vendor"], found["Acme Portal"]["versions"]) == (None, "before 2.4.2")
    assert found["Acme Portal"]["confidence"] < found["FortiAnalyzer"]["confidence"]  # unseen products are less sure
    start, end = found["FortiAnalyzer"]["evidence"]
    assert text[start:end] == "FortiAnalyzer version 7.0.2 and below"
    assert index.find("The weather is fine and nothing is affected.") == []


def test_a_trusted_model_writes_the_summary_under_a_schema_and_a_weak_one_does_not(trained_heads, source_mirror):  # noqa: F811
    from cybersecqwen.heads import load_heads
    from cybersecqwen.answering.advisory import analyze
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService, Fusion
    from tests.serve.test_promises import ScriptedBackend

    class Summarizer(ScriptedBackend):
        def generate(self, requests):
            self.requests += requests
            return ['{"summary": "Acme Portal has a SQL injection."}' for _ in requests]

    backend, heads, catalogs = Summarizer(), load_heads(trained_heads), load_catalogs(source_mirror)
    trusted = Fusion({job: [1.0, 0.5, 0.1] + [0.0, 0.0, 0.0] * (job == "attack") for job in ("cwe", "attack", "cvss")}, {job: 0.5 for job in ("cwe", "attack", "cvss")}, "test")
    result = analyze(CtiService(backend, catalogs, heads, trusted), ADVISORY, "html")
    assert result["summary"]["text"] == "Acme Portal has a SQL injection." and "JSON schema" in result["summary"]["method"]
    assert backend.requests[-1].json_schema is not None and result["summary"]["needs_review"]
    weak = Fusion({job: [1.0, 0.0, 0.1] + [0.0, 0.0, 0.0] * (job == "attack") for job in ("cwe", "attack", "cvss")}, {job: 0.5 for job in ("cwe", "attack", "cvss")}, "test")
    assert analyze(CtiService(Summarizer(), catalogs, heads, weak), ADVISORY, "html")["summary"]["method"].startswith("extractive")
