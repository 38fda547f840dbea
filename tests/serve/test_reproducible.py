"""Same request, same answer: the structured endpoints answer a request with the same JSON (ids and timestamps aside)
whatever was asked before it and after a restart, on the embedded model with its heads (fused answers)."""

from __future__ import annotations

import random

import httpx
import pytest


REPORT = ("APT28 sent spearphishing emails with a malicious attachment; the implant beacons over HTTPS to "
          "hxxps://update-check[.]info/gate.php and clears the event logs. CVE-2024-12345 is a SQL injection in "
          "Acme Portal 2.1 that lets remote attackers execute arbitrary SQL commands via the id parameter.")
FIRST = [
    ("/v1/cwe/classify", {"text": "SQL commands are built from unneutralized login input", "top_k": 3}),
    ("/v1/cve/map", {"cve_id": "CVE-2023-0001", "description": "A use-after-free in the kernel frees memory twice."}),
    ("/v1/attack/extract", {"text": "The malware enumerates directories and clears event logs to hide the intrusion."}),
    ("/v1/cti/ask", {"question": "Which tactic does T1059 serve?",
                     "options": ["Execution", "Persistence", "Exfiltration", "Discovery"]}),
    ("/v1/advisory/analyze", {"text": REPORT}),
]
OTHERS = ["A stored cross-site scripting flaw in the comment form.", "Path traversal lets attackers read arbitrary files.",
          "Heap overflow in the PNG parser via a crafted chunk length.", "The operators dump credentials from LSASS memory.",
          "Missing authentication for a critical function in the admin API."]
VOLATILE = {"id", "created", "request_id", "time", "published"}


def stable(value):
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def ask(http: httpx.Client, path: str, body: dict) -> dict:
    response = http.post(path, json=body)
    assert response.status_code == 200, (path, response.text[:300])
    return stable(response.json())


def other_requests(rng: random.Random, count: int) -> list[tuple[str, dict]]:
    pool = []
    for text in OTHERS:
        pool += [("/v1/cwe/classify", {"text": text, "top_k": 3}), ("/v1/attack/extract", {"text": text}),
                 ("/v1/cve/map", {"cve_id": "CVE-2024-0002", "description": text}), ("/v1/advisory/analyze", {"text": text})]
    return rng.sample(pool, count)


@pytest.mark.slow
def test_a_request_gets_the_same_answer_after_10_others_and_after_a_restart(make_server):
    server = make_server(timeout_s=600)
    with httpx.Client(base_url=server.url, timeout=600) as http:
        first = [ask(http, path, body) for path, body in FIRST]
        for path, body in other_requests(random.Random(7), 10):
            ask(http, path, body)
        again = [ask(http, path, body) for path, body in reversed(FIRST)][::-1]
    assert again == first
    restarted = make_server(timeout_s=600)
    with httpx.Client(base_url=restarted.url, timeout=600) as http:
        assert [ask(http, path, body) for path, body in FIRST] == first
