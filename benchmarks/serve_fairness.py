"""Issue 33's server targets in seconds: repeated structured requests in shuffled orders, 129 local sockets, the
timeout, adversarial advisory texts. Starts `cybersecqwen serve` on a free port (heads-only with --no-model, or the
embedded model fused with the heads) and talks HTTP to it like any client.

    PYTHONPATH=. .venv/bin/python benchmarks/serve_fairness.py [--repeats 1000] [--fused-repeats 1000] [--heads DIR]

- repeats: heads-only (--no-model), fused (the embedded model with the heads; where the heads' fusion weights give
  the model no weight it is not asked) and the model alone (--no-heads, every answer from llama.cpp scoring). A pool
  of distinct requests over /v1/cwe/classify, /v1/cve/map, /v1/attack/extract, /v1/cti/ask and
  /v1/advisory/analyze, sent `--repeats` times in a seeded shuffled order; every answer is compared with the first
  answer to the same request (ids and timestamps aside). Target: 0 differences. The audit log must hold each once.
- sockets: 129 connections that each sent one byte (then 129 idle ones); then /healthz and a classify are timed.
  Target: both within 1 s.
- timeout (--timeout 5): 200,000-character adversarial texts to /v1/advisory/analyze; the answer (200, or 504 at
  the deadline) must come within 5.5 s. 20,000 brackets heads-only: target <= 3 s.
Heads: --heads DIR, else what `serve` chooses (the cached default heads, built once from the mirror: minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.serve.test_reproducible import stable  # ids and timestamps aside, as the test compares

TEXTS = ["SQL commands are built from unneutralized login input in the search form.",
         "A stored cross-site scripting flaw in the comment form lets attackers inject script.",
         "Path traversal in the download handler lets attackers read arbitrary files.",
         "Heap overflow in the PNG parser via a crafted chunk length.",
         "The operators dump credentials from LSASS memory and move laterally over SMB.",
         "Missing authentication for a critical function in the admin API.",
         "A use-after-free in the kernel frees memory twice when a socket closes.",
         "The implant beacons over HTTPS to hxxps://update-check[.]info/gate.php and clears event logs.",
         "APT28 sent spearphishing emails with a malicious attachment that runs PowerShell.",
         "CVE-2024-12345 is an OS command injection in Acme Router 3.2 via the ping field."]
UNITS = ("[", "1.", "a@", "http://", "\"", "/")


def pool() -> list[tuple[str, dict]]:
    requests = []
    for i, text in enumerate(TEXTS):
        requests += [("/v1/cwe/classify", {"text": text, "top_k": 3}), ("/v1/attack/extract", {"text": text}),
                     ("/v1/cve/map", {"cve_id": f"CVE-2024-{1000 + i}", "description": text}),
                     ("/v1/advisory/analyze", {"text": text}),
                     ("/v1/cti/ask", {"question": f"Which weakness does this describe? {text}",
                                      "options": ["CWE-89", "CWE-79", "CWE-22", "CWE-787"]})]
    return requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, args: list[str], audit: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "cybersecqwen", "serve", "--port", str(self.port), "--audit-log", str(audit), *args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 1800  # the default heads may be built on first use
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise SystemExit("serve did not become ready in 30 minutes")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def repeats(url: str, count: int, seed: int) -> dict:
    requests = pool()
    rng = random.Random(seed)
    order = [rng.randrange(len(requests)) for _ in range(count)]
    first: dict[int, object] = {}
    differences, latencies = 0, []
    with httpx.Client(base_url=url, timeout=600) as http:
        for index in order:
            path, body = requests[index]
            t = time.perf_counter()
            response = http.post(path, json=body)
            latencies.append(time.perf_counter() - t)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
            answer = stable(response.json())
            if index in first:
                differences += answer != first[index]
            else:
                first[index] = answer
    latencies.sort()
    return {"requests": count, "distinct": len(first), "differences": differences,
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1), "p95_ms": round(1000 * latencies[int(0.95 * len(latencies))], 1)}


def sockets(url: str, port: int, send: bytes) -> dict:
    held = []
    for _ in range(129):
        connection = socket.create_connection(("127.0.0.1", port))
        if send:
            connection.sendall(send)
        held.append(connection)
    time.sleep(0.5)
    row = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        for name, call in {"healthz": lambda: http.get("/healthz"),
                           "classify": lambda: http.post("/v1/cwe/classify", json={"text": TEXTS[0], "top_k": 3})}.items():
            t = time.perf_counter()
            status = call().status_code
            row[name] = {"status": status, "seconds": round(time.perf_counter() - t, 3)}
    for connection in held:
        connection.close()
    return row


def adversarial(url: str, length: int) -> dict:
    rows = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        for unit in UNITS:
            text = (unit * (length // len(unit) + 1))[:length]
            t = time.perf_counter()
            status = http.post("/v1/advisory/analyze", json={"text": text}).status_code
            rows[unit] = {"status": status, "seconds": round(time.perf_counter() - t, 2)}
    return rows


def audit_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1000, help="heads-only repeats, sockets and timeout; 0 skips them")
    parser.add_argument("--fused-repeats", type=int, default=1000, help="0 skips the fused server")
    parser.add_argument("--model-repeats", type=int, default=200,
                        help="the model alone (--no-heads) answers every endpoint: slower, fewer repeats; 0 skips it")
    parser.add_argument("--heads", type=Path)
    parser.add_argument("--seed", type=int, default=33)
    args = parser.parse_args()
    heads = ["--heads", str(args.heads)] if args.heads else []
    report = {"machine": {"cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
                          "cores": os.cpu_count()}}
    with tempfile.TemporaryDirectory() as folder:
        if args.repeats:
            audit = Path(folder) / "heads.jsonl"
            server = Server(["--no-model", "--timeout", "5", *heads], audit)
            try:
                report["heads_only_repeats"] = repeats(server.url, args.repeats, args.seed)
                report["heads_only_audit_lines"] = audit_lines(audit)
                report["sockets_one_byte"] = sockets(server.url, server.port, b"G")
                report["sockets_idle"] = sockets(server.url, server.port, b"")
                report["analyze_20000_chars"] = adversarial(server.url, 20_000)
                report["analyze_200000_chars_timeout_5s"] = adversarial(server.url, 200_000)
                report["healthz_after"] = httpx.get(server.url + "/healthz").status_code
            finally:
                server.stop()
            print(json.dumps(report, indent=1), flush=True)
        if args.fused_repeats:
            audit = Path(folder) / "fused.jsonl"
            server = Server(["--timeout", "600", *heads], audit)
            try:
                report["fused_repeats"] = repeats(server.url, args.fused_repeats, args.seed)
                report["fused_audit_lines"] = audit_lines(audit)
            finally:
                server.stop()
        if args.model_repeats:
            audit = Path(folder) / "model.jsonl"
            server = Server(["--timeout", "600", "--no-heads"], audit)
            try:
                report["model_only_repeats"] = repeats(server.url, args.model_repeats, args.seed)
                report["model_only_audit_lines"] = audit_lines(audit)
            finally:
                server.stop()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
