"""`cybersecqwen enrich`: every line answered once, in order; resume after a kill without duplicates; STIX 2.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def write_alerts(path, n):
    lines = []
    for i in range(n):
        if i == 3:
            lines.append("{this is not json")
        elif i == 5:
            lines.append(json.dumps({"id": f"a{i}", "other": "no description field"}))
        else:
            lines.append(json.dumps({"id": f"a{i}", "cve_id": f"CVE-2023-{1000 + i}",
                                     "description": f"SQL injection number {i} in the login form builds SQL commands from input."}))
    path.write_text("\n".join(lines) + "\n")


def run_enrich(args, env):
    # --no-heads: the model alone, whatever heads a local `make demo` left in runs/ (the default would take them).
    return subprocess.Popen([sys.executable, "-m", "cybersecqwen", "enrich", "--no-heads", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_enrich_resumes_after_a_kill_without_duplicates_and_writes_stix(source_mirror, tmp_path, embedded_available):
    import stix2

    alerts, out, bundle = tmp_path / "alerts.jsonl", tmp_path / "enriched.jsonl", tmp_path / "bundle.json"
    write_alerts(alerts, 12)
    env = {**os.environ, "CYBERSECQWEN_DATA_DIR": str(source_mirror)}
    args = ["--in", str(alerts), "--out", str(out), "--task", "cwe", "--stix", str(bundle)]
    first = run_enrich(args, env)
    deadline = time.time() + 300
    while (not out.exists() or out.read_text().count("\n") < 3) and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = out.read_text().count("\n")
    assert 0 < done_before < 12, "the kill must land mid-run for this test to mean anything"
    with out.open("a") as handle:  # a torn line, as if killed in the middle of a write
        handle.write('{"id": "a9", "cybersec')

    second = run_enrich(args, env)
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12  # one output line per input line: nothing twice, nothing skipped
    assert [r.get("id") for r in rows if "id" in r] == [f"a{i}" for i in range(12) if i != 3]
    assert "error" in rows[3]["cybersecqwen"] and "not a JSON object" in rows[3]["cybersecqwen"]["error"]
    assert "no text in field 'description'" in rows[5]["cybersecqwen"]["error"]
    assert all(r["cybersecqwen"]["candidates"][0]["cwe_id"].startswith("CWE-") for i, r in enumerate(rows) if i not in (3, 5))
    assert f"resumed at line {done_before}" in stdout

    parsed = stix2.parse(bundle.read_text(), allow_custom=False)
    vulnerabilities = [o for o in parsed.objects if o.type == "vulnerability"]
    assert len(vulnerabilities) == 10
    assert {r.source_name for v in vulnerabilities for r in v.external_references} == {"cve", "cwe"}


def test_enrich_attack_bundle_has_patterns_groupings_and_relationships(source_mirror, tmp_path, embedded_available):
    import stix2

    from cybersecqwen.models import load_backend
    from cybersecqwen.answering.enrich import enrich
    from cybersecqwen.answering.loading import load_service

    alerts, out, bundle = tmp_path / "alerts.jsonl", tmp_path / "out.jsonl", tmp_path / "bundle.json"
    alerts.write_text(json.dumps({"id": "r1", "text": "The implant lists file and directory names, then runs a command interpreter."}) + "\n")
    backend = load_backend("embedded", "llamacpp")
    try:
        counts = enrich(load_service(backend, source_mirror, False, False), alerts, out, "text", "attack", bundle)
    finally:
        backend.close()
    assert counts == {"lines": 1, "resumed_at": 0, "enriched": 1, "errors": 0}
    parsed = stix2.parse(bundle.read_text())
    kinds = [o.type for o in parsed.objects]
    assert "attack-pattern" in kinds and "grouping" in kinds and "relationship" in kinds
    ids = {r.external_id for o in parsed.objects if o.type == "attack-pattern" for r in o.external_references}
    assert ids <= {"T1059", "T1083", "T1071", "T1070", "T1547"}


def test_enrich_refuses_bad_arguments(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cybersecqwen", "enrich", "--in", str(tmp_path / "none.jsonl"), "--out",
                             str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "a.jsonl").write_text("{}\n")
    result = subprocess.run([sys.executable, "-m", "cybersecqwen", "enrich", "--in", str(tmp_path / "a.jsonl"), "--out",
                             str(tmp_path / "o.jsonl"), "--task", "exploit"], capture_output=True, text=True)
    assert result.returncode == 2 and "--task must be one of cwe, attack" in result.stderr
