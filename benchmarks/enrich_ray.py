"""Enrichment throughput: the local engine vs Ray Data at 1 and 2 workers, heads only, same records, same output.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/enrich_ray.py --heads HEADS --records 3000

Records are CTI-RCM descriptions (the CVE-like text an alert pipeline carries), repeated to the count asked. Times
include each engine's start (Ray: the cluster and each worker's heads and catalogs); the steady rate excludes it
(records/s over the enrichment itself, from the Ray Data executor's own wall time). Peak RSS of the Ray workers is
sampled every 0.5 s (psutil).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import threading
import time
from pathlib import Path


def worker_peak(stop: threading.Event, peaks: dict) -> None:
    import psutil

    while not stop.is_set():
        for process in psutil.process_iter(["cmdline", "memory_info"]):
            command = " ".join(process.info["cmdline"] or [])
            if "MapWorker" in command and process.info["memory_info"]:
                peaks[process.pid] = max(peaks.get(process.pid, 0), process.info["memory_info"].rss)
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from cybersecqwen.answering.enrich import enrich_file
    from cybersecqwen.answering.enrich_ray import enrich_with_ray
    from cybersecqwen.datafiles import mirror_dir

    rows = list(csv.DictReader(open(mirror_dir() / "cti-bench" / "cti-rcm.tsv", encoding="utf-8"), delimiter="\t"))
    work = Path(tempfile.mkdtemp(prefix="enrich-ray-"))
    source = work / "alerts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "description": rows[i % len(rows)]["Description"]}) + "\n"
                              for i in range(args.records)))
    results = {"records": args.records}
    start = time.perf_counter()
    enrich_file("embedded", "auto", source, work / "local.jsonl", "description", "cwe", None, None, False, args.heads, True)
    results["local"] = {"seconds": round(time.perf_counter() - start, 1)}
    for workers in (1, 2):
        stop, peaks = threading.Event(), {}
        sampler = threading.Thread(target=worker_peak, args=(stop, peaks), daemon=True)
        sampler.start()
        start = time.perf_counter()
        enrich_with_ray(str(source), str(work / f"ray{workers}.jsonl"), "description", "cwe", "embedded", args.heads, True, None, False,
                        workers=workers)
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        same = (work / f"ray{workers}.jsonl").read_bytes() == (work / "local.jsonl").read_bytes()
        results[f"ray_{workers}"] = {"seconds": round(seconds, 1), "records_per_s": round(args.records / seconds, 1),
                                     "identical_to_local": same,
                                     "worker_peak_rss_gb": sorted(round(v / 1e9, 2) for v in peaks.values())}
    results["local"]["records_per_s"] = round(args.records / results["local"]["seconds"], 1)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
