"""Fused `/v1/cwe/classify` through a remote OpenAI-compatible server vs the local backend, on the same GGUF.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/remote_scoring.py --heads HEADS --items 100

Starts llama-cpp-python's server on the embedded GGUF (`--logits_all true`, its prompt cache on), builds the same
service twice (the heads, the catalogs, one fusion in which the model's weight is 1.0 so that its scores decide
near-ties), and classifies the first N CTI-RCM descriptions with each: top-1 agreement, the largest confidence
difference, and the seconds per call of each.
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import os

    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService, Fusion
    from cybersecqwen.datafiles import mirror_dir
    from cybersecqwen.heads import load_heads
    from cybersecqwen.models.embedded import embedded_gguf
    from cybersecqwen.models.llamacpp import LlamaCppBackend
    from cybersecqwen.models.openai import TEMPLATE_ENV, OpenAIBackend

    gguf = embedded_gguf()
    os.environ[TEMPLATE_ENV] = str(gguf)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port), "--logits_all", "true",
                               "--n_ctx", "4096", "--cache", "true", "--model_alias", "smollm2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        rows = list(csv.DictReader(open(mirror_dir() / "cti-bench" / "cti-rcm.tsv", encoding="utf-8"), delimiter="\t"))[: args.items]
        catalogs, heads = load_catalogs(), load_heads(args.heads)
        jobs = ("cwe", "attack", "cvss", "mcq")
        fusion = Fusion({job: [1.0, 1.0, 1.0] + [0.0, 0.0] * (job == "attack") for job in jobs}, {job: 0.5 for job in jobs},
                        "benchmark: head, model and lexical weighted 1.0 each")
        results, times = {}, {}
        for name, backend in (("local", LlamaCppBackend(gguf)), ("remote", OpenAIBackend(f"http://127.0.0.1:{port}/v1#smollm2"))):
            service = CtiService(backend, catalogs, heads, fusion)
            start, answers = time.perf_counter(), []
            for row in rows:
                answers.append([(c["cwe_id"], c["confidence"]) for c in service.classify_cwe(row["Description"], top_k=3)["candidates"]])
            times[name] = (time.perf_counter() - start) / len(rows)
            results[name] = answers
            backend.close()
        same_top1 = sum(a[0][0] == b[0][0] for a, b in zip(results["local"], results["remote"]))
        largest = max(abs(x[1] - y[1]) for a, b in zip(results["local"], results["remote"]) for x, y in zip(a, b))
        report = {"items": len(rows), "same_top1": same_top1, "largest_confidence_difference": round(largest, 6),
                  "seconds_per_call": {k: round(v, 2) for k, v in times.items()}}
        print(json.dumps(report, indent=2))
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
