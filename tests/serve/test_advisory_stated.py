"""Issue 27: advisory analysis reads what documents state (stated before inferred), keeps references apart from
indicators, does not mistake ordinary words for threat actors, exports MISP; checked on the real public documents in
tests/data/advisories (SOURCES.md there) with the fixture catalogs and heads."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.heads.conftest import heads_corpus, trained_heads  # noqa: F401 - fixtures
from tests.serve.test_promises import source_mirror  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture
def service(trained_heads, source_mirror):  # noqa: F811
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService
    from cybersecqwen.heads import load_heads

    return CtiService(None, load_catalogs(source_mirror), load_heads(trained_heads))


def test_stated_cwe_ids_vectors_and_fields_come_back_exactly_with_spans_and_flags():
    from cybersecqwen.answering import stated

    known = {"CWE-79": ("Improper Neutralization of Input During Web Page Generation", ""),
             "CWE-20": ("Improper Input Validation", ""), "CWE-365": ("Race Condition in Switch", "deprecated in CWE")}
    text = ("3.2.1 CROSS-SITE SCRIPTING CWE-79\nCVE-2024-0001 has been assigned. A CVSS v3.1 base score of 6.1 has been calculated; "
            "the CVSS vector string is (AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N).\n\n3.2.2 OLD CWE-365 and CWE\u201120, also CWE-264 and CWE-99999.\n"
            "CVE-2024-0002 scored CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P. A broken one: CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H.\n"
            "Vendor: Acme Industrial, Inc.\nEquipment: PLC-5000, HMI Panel and Gateway X\nPackage: left-pad (npm)\n"
            "A version string AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N without a label is not a vector.")
    cwes = stated.cwe_ids(text, known, {"CWE-79": None, "CWE-20": None})
    assert [c["cwe_id"] for c in cwes] == ["CWE-79", "CWE-365", "CWE-20", "CWE-264", "CWE-99999"]
    assert all(text[c["evidence"][0]:c["evidence"][1]].replace("\u2011", "-") == c["cwe_id"] for c in cwes)
    assert cwes[0]["flags"] == [] and cwes[0]["origin"] == "stated" and cwes[0]["name"].startswith("Improper Neutralization")
    assert cwes[1]["flags"] == ["deprecated in CWE"]  # returned, never dropped, and says why it is not an answer
    assert "not a weakness in this CWE catalog" in cwes[3]["flags"][0] and cwes[4]["name"] is None
    from cybersecqwen.answering.attack import stated as stated_techniques

    catalogs = SimpleNamespace(written={}, retired={"T1086": ""}, tactics={})
    assert stated_techniques(catalogs, "They used T1086.")[0]["flags"] == ["T1086 is deprecated in ATT&CK"]
    vectors = stated.vectors(text)
    assert [v["vector"] for v in vectors] == ["CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                                             "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H"]
    assert vectors[0]["base_score"] == 6.1 and vectors[1]["base_score"] == 9.8
    assert vectors[2]["flags"] == ["missing base metrics A", "invalid values AV:X"] and vectors[2]["base_score"] is None
    groups = {g["cve_id"]: g for g in stated.per_cve(text, cwes, vectors)}
    assert groups["CVE-2024-0001"]["cwe_id"] == "CWE-79" and groups["CVE-2024-0001"]["cvss_vector"].endswith("A:N")
    assert groups["CVE-2024-0002"]["cvss_vector"].endswith("C:H/I:H/A:H")
    lines = stated.affected_lines(text)
    assert [(x["vendor"], x["product"]) for x in lines] == [("Acme Industrial, Inc.", "PLC-5000"), ("Acme Industrial, Inc.", "HMI Panel"),
                                                           ("Acme Industrial, Inc.", "Gateway X"), ("Acme Industrial, Inc.", "left-pad")]
    assert all(text[x["evidence"][0]:x["evidence"][1]] == x["product"] for x in lines)


def test_links_are_read_as_written_and_references_are_never_indicators():
    from cybersecqwen.answering.advisory import find_iocs
    from cybersecqwen.answering.references import split

    text = ("### Workarounds\nSee [CSP](https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Content-Security-Policy), "
            "[slow loris](https://en.wikipedia.org/wiki/Slowloris_(computer_security)). Fixed in https://github.com/org/repo/pull/8079.\n"
            "Questions: security@example-vendor.com. Details: https://nvd.nist.gov/vuln/detail/CVE-2024-0001\n"
            "The implant beacons to https://cdn.example-c2.org/a.php every hour. A second stage came from hxxp://dl.example-stage[.]com/x.bin\n\n"
            "## Indicators of compromise\n- update-check.net\n- 203.0.113.7\n")
    labelled = "C2 servers seen this week: 198.51.100.23, relay-node.biz. Documentation: https://docs.example.org/setup"
    iocs = find_iocs(text)
    urls = {i["value"] for i in iocs if i["type"] == "url"}
    # The exact URLs the text writes: no "httP:/" inside a path, no ":/pull", the wiki link keeps its parentheses.
    assert {"https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Content-Security-Policy",
            "https://en.wikipedia.org/wiki/Slowloris_(computer_security)", "https://github.com/org/repo/pull/8079"} <= urls
    assert not any(re.search(r"://[^/]+/.*:/", u) for u in urls)
    indicators, references = split(iocs, text)
    assert {i["value"] for i in indicators} == {"update-check.net", "203.0.113.7", "https://cdn.example-c2.org/a.php",
                                                "http://dl.example-stage.com/x.bin"}
    marked = {i["value"]: i["marked"] for i in indicators}
    assert marked["update-check.net"] == "listed under an indicator heading" and marked["http://dl.example-stage.com/x.bin"] == "defanged"
    assert marked["https://cdn.example-c2.org/a.php"] == "called malicious"
    kinds = {r["value"]: r["kind"] for r in references}
    assert kinds["https://github.com/org/repo/pull/8079"] == "code host" and kinds["security@example-vendor.com"] == "contact"
    assert kinds["https://nvd.nist.gov/vuln/detail/CVE-2024-0001"] == "vulnerability database"
    indicators, references = split(find_iocs(labelled), labelled)  # a list under a label on one line
    assert {i["value"] for i in indicators} == {"198.51.100.23", "relay-node.biz"}
    assert [r["value"] for r in references] == ["https://docs.example.org/setup"]


@pytest.mark.skipif(importlib.util.find_spec("pymispwarninglists") is None, reason="pymispwarninglists is not installed")
def test_indicators_on_a_benign_list_are_kept_and_flagged():
    from cybersecqwen.answering.advisory import find_iocs
    from cybersecqwen.answering.references import split

    text = "== C&C servers\n- github[.]com\n- evil-updates[.]biz\n"
    indicators, _ = split(find_iocs(text), text)
    flags = {i["value"]: i["flags"] for i in indicators}
    assert any("MISP warninglist" in f for f in flags["github.com"]) and flags["evil-updates.biz"] == []


def test_ordinary_words_and_longer_names_are_not_threat_actors():
    from cybersecqwen.answering.advisory import plainly_named

    apt41 = SimpleNamespace(name="APT41", aliases=("LEAD", "BARIUM", "Wicked Panda"))
    tick = SimpleNamespace(name="BRONZE BUTLER", aliases=("Tick",))
    cobalt = SimpleNamespace(name="Cobalt Group", aliases=("Cobalt",))
    common = frozenset({"lead", "cobalt"})

    def named(actor, text, word):
        match = re.search(re.escape(word), text, re.IGNORECASE)
        return plainly_named(actor, match, text, common)

    assert not named(apt41, "Upgrading will lead to a fixed build.", "lead")
    assert not named(apt41, "LEAD: the first paragraph of the notice.", "LEAD")  # all caps, no actor context
    assert named(apt41, "The LEAD group (G0096) targeted game studios.", "LEAD")
    assert not named(tick, "Tick the box to enable it.", "Tick") and not named(tick, "a tick of the clock", "tick")
    assert named(tick, "Tick, a threat actor active since 2006, sent spearphishing email.", "Tick")
    assert not named(cobalt, "A Cobalt Strike loader was dropped by the group.", "Cobalt")
    assert named(apt41, "Wicked Panda deployed a new backdoor.", "Wicked Panda")  # several words: a name, no context needed


def test_the_real_documents_are_read_as_their_sources_state_them(service):
    """Every CVE, CWE id, vector, vendor and product the sources' own fields give comes back as stated, every ESET
    indicator is found, no reference is an indicator, and no ordinary word becomes an actor."""
    from advisory import load_documents, predicted

    from cybersecqwen.answering.advisory import analyze

    docs = load_documents()
    assert len(docs) >= 20 and {d["kind"] for d in docs} == {"CISA ICS advisory (CSAF)", "GitHub security advisory", "ESET IOC page"}
    for doc in docs:
        result = analyze(service, doc["text"])
        guess = predicted(result)
        for field in ("cve", "cwe", "vector", "vendor", "product", "indicator"):
            if doc["truth"][field]:
                assert guess[field] == doc["truth"][field], (doc["name"], field)
        if doc["truth"]["cwe"]:
            assert all(w["origin"] == "stated" for w in result["weaknesses"]), doc["name"]
        if doc["kind"] != "ESET IOC page":
            assert result["iocs"] == [] and result["references"] and result["actors"] == [], doc["name"]
            assert all(v["origin"] == "stated" for v in result["cvss_vectors"]) and result["vulnerabilities"], doc["name"]
        else:
            assert all("welivesecurity" not in i["value"] for i in result["iocs"])


@pytest.mark.skipif(importlib.util.find_spec("pymisp") is None, reason="pymisp is not installed")
def test_misp_export_is_a_valid_event_with_ids_only_on_indicators(service, tmp_path):
    from pymisp import MISPEvent

    from cybersecqwen.answering.advisory import analyze
    from cybersecqwen.answering.misp import to_misp

    text = ("Vendor: Acme\nEquipment: PLC-5000\nCVE-2024-0001: SQL injection (CWE-89) lets attackers run scripts (T1059).\n"
            "== Indicators\n- evil-updates[.]biz\n- 44d88612fea8a8f36de82e1278abb02f\nAdvisory: https://nvd.nist.gov/vuln/detail/CVE-2024-0001")
    result = analyze(service, text)
    event = MISPEvent()
    event.from_dict(**to_misp(result, "acme.txt"))
    by_type = {a.type: a for a in event.attributes}
    assert by_type["domain"].value == "evil-updates.biz" and by_type["domain"].to_ids
    assert by_type["md5"].to_ids and not by_type["vulnerability"].to_ids and not by_type["weakness"].to_ids
    assert by_type["link"].value == "https://nvd.nist.gov/vuln/detail/CVE-2024-0001" and not by_type["link"].to_ids
    assert "stated at [" in by_type["weakness"].comment and "defanged" in by_type["domain"].comment
    tags = {t.name for t in event.tags}
    assert "cwe:CWE-89" in tags and any(t.startswith("misp-galaxy:mitre-attack-pattern=") and "T1059" in t for t in tags)
    # The endpoint: "misp": true returns the same event beside the analysis.
    from fastapi.testclient import TestClient

    from cybersecqwen.serve.app import ServerSettings, create_app

    app = create_app(None, service, ServerSettings(model_name="heads", audit_log=tmp_path / "audit.jsonl"))
    body = TestClient(app, base_url="http://localhost").post("/v1/advisory/analyze", json={"text": text, "misp": True}).json()
    served = MISPEvent()
    served.from_dict(**body["misp"])
    assert {a.value for a in served.attributes if a.to_ids} == {"evil-updates.biz", "44d88612fea8a8f36de82e1278abb02f"}


@pytest.mark.skipif(importlib.util.find_spec("pymisp") is None, reason="pymisp is not installed")
def test_analyze_writes_a_misp_event_per_file(trained_heads, source_mirror, tmp_path):  # noqa: F811
    from pymisp import MISPEvent

    from cybersecqwen.answering.advisory import analyze_files
    from cybersecqwen.errors import CybersecqwenError

    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text(f"CVE-2024-000{len(name)} (CWE-89).\nIOCs: evil-{name}[.]biz\n")
    out = tmp_path / "misp"
    out.mkdir()
    results = list(analyze_files([tmp_path / "a.txt", tmp_path / "b.txt"], None, None, "embedded", "auto", trained_heads, True,
                                 source_mirror, False, misp=out))
    for name, result in zip("ab", results):
        event = MISPEvent()
        event.load_file(str(out / f"{name}.misp.json"))
        assert result["misp_file"] == str(out / f"{name}.misp.json")
        assert [a.value for a in event.attributes if a.to_ids] == [f"evil-{name}.biz"]
    (tmp_path / "single.json").write_text("{}")
    with pytest.raises(CybersecqwenError, match="--misp .* names a folder"):
        list(analyze_files([tmp_path / "a.txt", tmp_path / "b.txt"], None, None, "embedded", "auto", trained_heads, True,
                           source_mirror, False, misp=tmp_path / "single.json"))
