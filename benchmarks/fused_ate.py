"""CTI-ATE: the model alone, the heads alone and the two fused, on the same seeded items, through the task scorer.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/fused_ate.py --heads runs/demo/heads/model \
        --model runs/demo/gguf/smollm2-135m-cpu-Q4_K_M.gguf --items 20 --out ate.json

The model alone answers the CTI-ATE prompt by generation (ctibench rules); the heads answer with their technique
threshold; the fused answerer is the server's /v1/attack/extract (HEADS/fusion.json weights for this model). Each
gets micro-F1 and macro-F1 with 95% bootstrap CIs on the same items, and `compare` gives the paired differences.
CTI-Bench is the test set: nothing here is tuned on it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from cybersecqwen.answering.fuse import FusedResponder, fused_service
    from cybersecqwen.evaluate.runner import EvalConfig, run_eval

    work = Path(tempfile.mkdtemp(prefix="fused-ate-"))
    tasks = {"cti-ate": args.items}
    runs = {"model": work / "model", "heads": work / "heads", "fused": work / "fused"}
    # 128 new tokens: a CTI-ATE answer is a short list (the ctibench default of 2,048 would mostly time a 135M model rambling).
    reports = {"model": run_eval(EvalConfig(model=args.model, tasks=tasks, out=runs["model"], max_tokens=128)),
               "heads": run_eval(EvalConfig(model=f"heads:{args.heads}", tasks=tasks, out=runs["heads"]))}
    service, backend = fused_service(args.heads, args.model)
    try:
        responder = FusedResponder(service, f"fused:{args.heads}+{args.model}")
        reports["fused"] = run_eval(EvalConfig(model=f"fused:{args.heads}", tasks=tasks, out=runs["fused"]), responder=responder)
    finally:
        backend.close()
    results = {"items": args.items, "fusion": service.fusion.source, **ate_summary(reports, runs, (("model", "fused"), ("heads", "fused")))}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def ate_summary(reports: dict, runs: dict, pairs) -> dict:
    """Per answerer its CTI-ATE micro/macro-F1, parse failures and micro-F1 CI; per (a, b) pair the paired difference
    b - a with its CI and test (shared with benchmarks/ate_knowledge.py)."""
    from cybersecqwen.evaluate.compare import compare_runs

    out = {label: {m: report["tasks"]["cti-ate"]["metrics"].get(m) for m in ("micro_f1", "macro_f1", "parse_failure_rate")}
           | {"ci95_micro_f1": report["tasks"]["cti-ate"]["ci95"].get("micro_f1")} for label, report in reports.items()}
    for a, b in pairs:
        paired = compare_runs(runs[a], runs[b])["tasks"]["cti-ate"]
        out[f"{b}_vs_{a}"] = {k: paired[k] for k in ("difference_b_minus_a", "ci95", "p_value", "test", "n_shared_items")}
    return out


if __name__ == "__main__":
    main()
