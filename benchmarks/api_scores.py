"""CTI-Bench whole files through the served API, as an analyst's client would ask them, beside `eval --model heads:`.

    .venv/bin/python benchmarks/api_scores.py --heads DIR [--data-dir ../shared/data] [--tasks cti-rcm,cti-vsp,cti-mcq,cti-ate]
        [--limit N] [--out results.json]

The app runs in-process (FastAPI's TestClient, `serve --no-model --heads DIR`: the heads and the open catalogs, no
language model) and each row goes to the endpoint an analyst would use:
- CTI-RCM: POST /v1/cve/map {cve_id, description}; the answer is the first CWE (top-5 from the first five);
- CTI-VSP: the same call's `cvss.vector`;
- CTI-MCQ: POST /v1/cti/ask {question, options}; the answer is `option` (open-book: the catalogs' passages);
- CTI-ATE: POST /v1/attack/extract {text, max_techniques: 20}; the answer is every technique returned.
Each answer is written in the task's answer form and scored by the task's official scorer (ctibench rules) with its
95% bootstrap CI, its parse-failure rate and the answer key's trivial baseline; the same rows are also answered by
`eval --model heads:DIR`'s responder, and the two are compared item by item (issue 36.6: one number per answerer).
CTI-Bench is the test set: nothing here chooses anything. Per-request latency (p50/p95 ms) is recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cybersecqwen.evaluate.scoring import Response, score_task  # noqa: E402
from cybersecqwen.tasks import get_task  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


TOP5: dict[int, list[str]] = {}  # CTI-RCM row -> the API's five CWE ids, for top-5


def ask(client, task, item) -> str:
    """One row through the API, its answer in the task's answer form."""
    f = item.fields
    if task.name in ("cti-rcm", "cti-vsp"):
        cve = f.get("URL", "").rsplit("/", 1)[-1] if "CVE-" in f.get("URL", "") else "CVE-2024-0001"
        body = client.post("/v1/cve/map", json={"cve_id": cve, "description": f["Description"], "top_k": 5}).json()
        if task.name == "cti-vsp":
            return task.render_answer(body["cvss"]["vector"])
        first = body["cwe"][0]
        TOP5[item.index] = [c["cwe_id"] for c in body["cwe"]]
        return task.render_answer(first["cwe_id"], first["name"], "the API's five: " + ", ".join(TOP5[item.index]))
    if task.name == "cti-mcq":
        options = [f[f"Option {x}"] for x in "ABCD"]
        body = client.post("/v1/cti/ask", json={"question": f["Question"], "options": options}).json()
        letter = body.get("answer") or "?"
        return task.render_answer(options["ABCD".index(letter)] if letter in "ABCD" else "", letter)
    if task.name == "cti-ate":
        body = client.post("/v1/attack/extract", json={"text": f[task.item_text_fields[0]], "max_techniques": 20}).json()
        return task.render_answer({t["technique_id"]: t["evidence"] for t in body["techniques"]},
                                  {t["technique_id"]: t["name"] for t in body["techniques"]})
    raise SystemExit(f"{task.name}: not an API task here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--tasks", default="cti-rcm,cti-vsp,cti-mcq,cti-ate")
    parser.add_argument("--limit", type=int, default=None, help="first N rows per task (default: whole files)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from cybersecqwen.heads.respond import HeadsResponder
    from cybersecqwen.serve.app import ServerSettings
    from cybersecqwen.serve.server import build_app

    app, _ = build_app("embedded", "auto", ServerSettings(max_body_bytes=2_000_000), args.data_dir, heads=args.heads, no_model=True)
    responder = HeadsResponder(args.heads, args.data_dir)
    results = {"heads": str(args.heads), "cve_protocol": responder.info.details.get("cve_protocol"),
               "created": time.strftime("%Y-%m-%d"), "tasks": {}}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for name in args.tasks.split(","):
            task = get_task(name)
            items = task.load(args.data_dir)[: args.limit]
            api, timings = {}, []
            for n, item in enumerate(items):
                started = time.perf_counter()
                api[(item.index, 0)] = Response(item.index, 0, ask(client, task, item))
                timings.append(1000 * (time.perf_counter() - started))
                if n % 200 == 0:
                    print(f"[{name}] {n}/{len(items)}", flush=True)
            local = {(i.index, 0): Response(i.index, 0, text) for i, text in zip(items, responder.answers(task, items))}
            scored = {label: score_task(task, items, responses, "ctibench") for label, responses in (("api", api), ("eval", local))}
            # Answers compared as the scorer parsed them (the texts differ in their free explanation lines).
            parsed = {label: {(r["index"], r["trial"]): str(r["answer"]) for r in score.records} for label, score in scored.items()}
            differ = sum(parsed["api"][k] != parsed["eval"].get(k) for k in parsed["api"])
            entry = {"n": len(items), "api": scored["api"].metrics, "api_ci95": scored["api"].ci95,
                     "eval_heads": scored["eval"].metrics, "eval_heads_ci95": scored["eval"].ci95, "answers_differ": differ,
                     "trivial_answer": str(task.trivial_answer(task.load(args.data_dir))),
                     "latency_ms": {"p50": round(statistics.median(timings), 1), "p95": round(percentile(timings, 0.95), 1)}}
            if name == "cti-rcm":
                hits = [str(item.gold).strip() in TOP5.get(item.index, []) for item in items]
                entry["api_top5"] = round(sum(hits) / len(hits), 4)
            entry["per_item"] = {str(k[0]): parsed["api"][k] for k in sorted(parsed["api"])}  # for paired tests between runs
            entry["per_item_correct"] = {str(r["index"]): r.get("stats", {}) for r in scored["api"].records}
            results["tasks"][name] = entry
            print(json.dumps({name: entry}, default=str), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
