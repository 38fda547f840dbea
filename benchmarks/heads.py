"""Specialist heads: training time, CTI-Bench accuracy of heads alone and fused, and the service's latency.

    .venv/bin/python benchmarks/heads.py --corpus DIR [--heads DIR] [--model M] [--fused-items 300] [--out results.json]

Trains the heads on the corpus (unless --heads names a trained folder), scores them on the whole CTI-RCM,
CTI-RCM-2021, CTI-VSP and CTI-ATE files through the task scorers (`eval --model heads:DIR`), times
/v1/cwe/classify and /v1/cve/map through CtiService (heads alone, and fused with the embedded GGUF through
llama.cpp using HEADS/fusion.json when present), scores the fused CWE ranking on CTI-RCM items, and times
`enrich --no-model`. CTI-Bench is the test set: nothing here is tuned on it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(label: str, service, texts: list[str]) -> dict:
    """p50 / p95 milliseconds of /v1/cwe/classify and /v1/cve/map's work, one call per text."""
    out = {}
    for call in ("classify", "map"):
        timings = []
        for text in texts:
            started = time.perf_counter()
            service.classify_cwe(text) if call == "classify" else service.map_cve("CVE-2024-0001", text)
            timings.append(1000 * (time.perf_counter() - started))
        out[f"{label}_{call}_ms"] = {"p50": round(statistics.median(timings), 1), "p95": round(percentile(timings, 0.95), 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--heads", type=Path)
    parser.add_argument("--fused-items", type=int, default=300)
    parser.add_argument("--model", default="embedded", help="the model to fuse with (its HEADS/fusion.json weights)")
    parser.add_argument("--latency-calls", type=int, default=30)
    parser.add_argument("--skip-fused", action="store_true", help="heads alone (no model loaded)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from cybersecqwen.evaluate.runner import EvalConfig, run_eval
    from cybersecqwen.heads import load_heads
    from cybersecqwen.heads.train import train_heads
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.enrich import enrich
    from cybersecqwen.answering.loading import serving_backend
    from cybersecqwen.answering.service import CtiService
    from cybersecqwen.tasks import get_task

    work = Path(tempfile.mkdtemp(prefix="heads-bench-"))
    results: dict = {}
    heads_dir = args.heads
    if heads_dir is None:
        started = time.perf_counter()
        train_heads(args.corpus, work / "heads")
        results["train_seconds"] = round(time.perf_counter() - started, 1)
        heads_dir = work / "heads"
    heads = load_heads(heads_dir)
    results["validation"] = {name: heads.validation(name) for name in heads.models}

    tasks = {t: None for t in ("cti-rcm", "cti-rcm-2021", "cti-vsp", "cti-ate") if heads.has({"cti-vsp": "cvss-AV", "cti-ate": "attack"}.get(t, "cwe"))}
    report = run_eval(EvalConfig(model=f"heads:{heads_dir}", tasks=tasks, out=work / "eval-heads"))
    results["heads_on_ctibench"] = {name: {"metrics": entry["metrics"], "ci95": entry["ci95"], "baseline": entry["trivial_baseline"]["sample"]}
                                    for name, entry in report["tasks"].items()}
    items = get_task("cti-rcm").load()
    texts = [item.fields["Description"] for item in items]
    ranked = heads.ranked("cwe", texts, 12)
    results["heads_rcm_topk"] = {f"top{k}": round(float(np.mean([i.gold in [c for c, _ in r[:k]] for r, i in zip(ranked, items)])), 4)
                                 for k in (1, 5, 12)}
    vsp = get_task("cti-vsp").load()
    from cybersecqwen.tasks.vsp import base_score

    golds = [base_score(i.gold) for i in vsp]
    median = float(np.median(golds))
    results["vsp_median_baseline_mad"] = round(float(np.mean([abs(median - g) for g in golds])), 4)

    catalogs = load_catalogs()
    only = CtiService(None, catalogs, heads)
    results.update(latency("heads_only", only, texts[: args.latency_calls]))
    if not args.skip_fused:
        from cybersecqwen.answering.loading import model_identity

        backend = serving_backend(args.model, "auto")
        try:
            fused = CtiService(backend, catalogs, heads, model_label=model_identity(args.model))
            results["fusion_source"] = fused.fusion.source
            results.update(latency("fused", fused, texts[: args.latency_calls]))
            chosen = items[: args.fused_items]
            tops = [fused.rank_cwe(i.fields["Description"], 5, "cti-rcm") for i in chosen]
            results["fused_rcm"] = {"items": len(chosen), "top1": round(float(np.mean([t[0]["cwe_id"] == i.gold for t, i in zip(tops, chosen)])), 4),
                                    "top5": round(float(np.mean([i.gold in [c["cwe_id"] for c in t] for t, i in zip(tops, chosen)])), 4),
                                    "heads_top1_same_items": round(float(np.mean([r[0][0] == i.gold for r, i in zip(ranked, chosen)])), 4)}
        finally:
            backend.close()

    alerts = work / "alerts.jsonl"
    alerts.write_text("".join(json.dumps({"id": n, "description": t}) + "\n" for n, t in enumerate(texts[:500])))
    started = time.perf_counter()
    enrich(only, alerts, work / "enriched.jsonl", "description", "cwe")
    results["enrich_no_model_records_per_s"] = round(500 / (time.perf_counter() - started), 1)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
