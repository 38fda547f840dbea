"""Server throughput and latency at 1, 4 and 16 concurrent clients vs llama-cpp-python called directly.

    .venv/bin/python benchmarks/serve_load.py [--gguf FILE] [--requests 16] [--tokens 32]

The raw row calls `Llama.create_chat_completion` in-process on the same GGUF (the embedded Q4_1 file by
default), one request at a time. The server rows start `cybersecqwen serve --chat-only` on a free port and send
/v1/chat/completions from N client threads (the model runs one request at a time: extra clients queue, so
latency grows with N while tokens/s should stay flat). Both sides decode greedily, so they produce the same tokens.
Added latency = server p50 at 1 client minus raw p50.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

PROMPT = "Summarise in two sentences what CVE-2021-44228 (Log4Shell) is and how defenders detect exploitation."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raw(gguf: Path, requests: int, tokens: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=4096, verbose=False)
    latencies, produced = [], 0
    started = time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        out = llm.create_chat_completion([{"role": "user", "content": PROMPT}], max_tokens=tokens, temperature=0)
        latencies.append(time.perf_counter() - t)
        produced += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - started
    llm.close()
    return {"clients": 1, "tokens_per_s": produced / seconds, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * percentile(latencies, 0.95), "errors": 0}


def served(url: str, clients: int, requests: int, tokens: int) -> dict:
    latencies, produced, errors = [], [0], [0]
    lock = threading.Lock()
    per_client = max(1, requests // clients)

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            for _ in range(per_client):
                t = time.perf_counter()
                response = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PROMPT}],
                                                                    "max_tokens": tokens, "temperature": 0})
                elapsed = time.perf_counter() - t
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                        produced[0] += response.json()["usage"]["completion_tokens"]
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"clients": clients, "tokens_per_s": produced[0] / seconds, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * percentile(latencies, 0.95), "errors": errors[0]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    from cybersecqwen.models.embedded import embedded_gguf

    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    gguf = args.gguf or embedded_gguf()
    rows = [{"setup": "llama-cpp-python direct", **raw(gguf, args.requests, args.tokens)}]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cybersecqwen", "serve", "--model", str(gguf), "--port", str(port),
                               "--chat-only", "--max-queue", "64"], env={**os.environ}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.5)
        for clients in (1, 4, 16):
            rows.append({"setup": "cybersecqwen serve", **served(url, clients, args.requests, args.tokens)})
    finally:
        server.terminate()
        server.wait()
    print("| setup | clients | tokens/s | p50 ms | p95 ms | errors |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['clients']} | {r['tokens_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['errors']} |")
    base, single = rows[0], rows[1]
    print(f"\nserver single-stream speed: {single['tokens_per_s'] / base['tokens_per_s']:.2f}x raw; "
          f"added p50 latency: {single['p50_ms'] - base['p50_ms']:.0f} ms")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
