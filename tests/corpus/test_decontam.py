"""Decontamination catches copies of benchmark items, edited ones included, and not shared boilerplate."""

import json

import pytest

from cybersecqwen.corpus.audit import audit_file
from cybersecqwen.corpus.decontam import BenchmarkIndex
from cybersecqwen.errors import CybersecqwenError

LONG_DESCRIPTION = (
    "A heap-based buffer overflow in the packet reassembly routine of ExampleRouter firmware 3.2 allows remote "
    "unauthenticated attackers to execute arbitrary code by sending crafted fragmented IPv6 packets to the "
    "management interface."
)


@pytest.fixture
def index(fixture_mirror):
    index = BenchmarkIndex.build(fixture_mirror)
    index.add_text(("cti-rcm", 99), LONG_DESCRIPTION)  # a realistic-length item beside the short fixtures
    return index


def test_planted_item_and_lightly_edited_copy_are_caught(index):
    planted = f"Analyze this CVE.\n\nCVE Description: {LONG_DESCRIPTION}\n\nCWE-787"
    assert [(h.split, h.index, h.reason) for h in index.check(planted)] == [("cti-rcm", 99, "ngram13")]
    edited = LONG_DESCRIPTION.replace("heap-based", "stack-based").replace("crafted", "malicious")
    hits = index.check(edited)
    assert [(h.split, h.index) for h in hits] == [("cti-rcm", 99)]
    assert hits[0].reason == "ngram5" and hits[0].coverage >= 0.9


def test_templated_advisory_of_another_product_is_not_a_copy(index):
    index.add_text(("cti-rcm", 98), "The WPForms Pro plugin for WordPress is vulnerable to Stored Cross-Site Scripting via form "
                   "submission parameters in all versions up to, and including, 1.8.5.3 due to insufficient input "
                   "sanitization and output escaping.")
    other = ("The Spotify Embed Creator plugin for WordPress is vulnerable to Stored Cross-Site Scripting via the plugin's "
             "'spotify' shortcode in all versions up to, and including, 1.0.5 due to insufficient input sanitization "
             "and output escaping.")
    assert index.check(other) == []


def test_shared_boilerplate_alone_is_not_contamination(index):
    boilerplate = ("allows remote unauthenticated attackers to execute arbitrary code by sending crafted requests "
                   "to the web interface of an unrelated product that handles uploads")
    assert index.check(boilerplate) == []


def test_short_items_cve_ids_and_item_urls(index):
    assert [(h.split, h.index) for h in index.check("Quiz: which CWE is SQL injection? Answer B")] == [("cti-mcq", 1)]
    assert [h.reason for h in index.check("Quiz: which CWE is SQL injection? Answer B")] == ["ngram5"]
    tiny = BenchmarkIndex()
    tiny.add_text(("cti-mcq", 7), "What does MFA mitigate?")  # four words: too short for any 5-gram
    assert [h.reason for h in tiny.check("Q: what does MFA mitigate? A: brute force")] == ["short-exact"]
    cve_index = BenchmarkIndex()
    cve_index.cve_ids["CVE-2024-23848"].add(("cti-rcm", 0))
    cve_index.urls["example.org/report-1"].add(("cti-taa", 3))
    assert cve_index.check("see cve-2024-23848 for details")[0].reason == "cve-id"
    assert cve_index.check("as https://www.example.org/report-1/ says")[0].reason == "url"


def test_audit_reports_overlap_per_split(tmp_path, fixture_mirror):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join([
        json.dumps({"messages": [{"role": "user", "content": "Map: Stored XSS in the admin page of the product."}]}),
        json.dumps({"prompt": "Unrelated question about DNS tunnelling detection", "response": "Look at query entropy."}),
    ]) + "\n")
    result = audit_file(path, fixture_mirror)
    assert result["examples"] == 2 and result["examples_overlapping_any_split"] == 1
    assert result["splits"]["cti-rcm"]["items_hit"] == 1


def test_audit_names_the_bad_line(tmp_path, fixture_mirror):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(CybersecqwenError, match="line 2 is not JSON"):
        audit_file(path, fixture_mirror)


def test_release_training_file_holds_cti_rcm_2021(mirror):
    """A measured fact about the published model's own data, kept as a regression check of the auditor."""
    path = mirror / "cybersecqwen-release-rcm-2021" / "rcm_2021_train.jsonl"
    result = audit_file(path, mirror)
    assert result["splits"]["cti-rcm-2021"]["items_hit"] == 1000
    assert result["splits"]["cti-mcq"]["items_hit"] == 0
