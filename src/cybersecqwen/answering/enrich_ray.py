"""`cybersecqwen enrich --engine ray`: the same enrichment on Ray Data, for inputs one process cannot keep up with.

The input is read as lines (JSONL) or rows (Parquet), from a local path or anything pyarrow's filesystems read
(s3://, gs://, hdfs://...), and enriched in Ray workers with `map_batches`: each worker builds the service once
(the heads, the catalogs, the knowledge index and, if given, the remote model: an `openai:` URL, since a local GGUF
in every worker would load the model N times) and applies exactly the single-process per-record function
(`enrich.enrich_record`), so a missing field or a non-object line gets the same per-record `error`, nothing is
skipped, and the output holds one row per input row in input order (Ray Data's `preserve_order`).

The output goes to a local `.jsonl` file (streamed from the driver in order, written atomically) or, for any other
path or URI, to a folder of JSONL or Parquet files written by the workers (`.parquet` in the name: Parquet).
`--ray-address` joins an existing cluster (`ray://head:10001` or `auto`); without it a local one is started with
`--workers` + 1 CPUs. On a cluster the heads folder, the data mirror and the input must be readable from every node
(a shared path, or object storage for the input and output). Ray is an optional extra (`pip install "ray[data]"`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cybersecqwen.errors import CybersecqwenError

BATCH = 64


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CybersecqwenError('--engine ray needs Ray Data: pip install "ray[data]" (or `pip install -e ".[ray]"`); '
                                "without it use the default engine") from None
    return ray


class Enricher:
    """One per Ray worker: the service, built once; each batch of records enriched by the single-process function."""

    def __init__(self, options: dict[str, Any]) -> None:
        from cybersecqwen.answering.loading import load_service, serving_backend

        self.field, self.task = options["field"], options["task"]
        backend = serving_backend(options["model"], "auto", options["no_model"])
        self.service = load_service(backend, options["data_dir"], options["download"], False, options["heads"], options["model"])

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        from cybersecqwen.answering.enrich import enrich_record

        lines = batch["line"] if "line" in batch else [json.dumps(row, ensure_ascii=False, default=str) for row in rows(batch)]
        return {"line": [json.dumps(enrich_record(self.service, str(line), self.field, self.task), ensure_ascii=False) for line in lines]}


def rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """A columnar batch (Parquet) as records."""
    columns = list(batch)
    count = len(batch[columns[0]]) if columns else 0
    return [{name: value.item() if hasattr(value, "item") else value for name, value in ((c, batch[c][i]) for c in columns)}
            for i in range(count)]


def read(ray, source: str):
    if source.endswith(".parquet") or Path(source).is_dir() and any(Path(source).glob("*.parquet")):
        return ray.data.read_parquet(source)
    # JSONL as text: a malformed line must reach the per-record function (read_json would fail the whole read).
    return ray.data.read_text(source, drop_empty_lines=False).map_batches(lambda b: {"line": list(b["text"])}, batch_format="numpy")


def enrich_with_ray(source: str, out: str, field: str, task: str, model: str, heads: Path | None, no_model: bool,
                    data_dir: Path | None, download: bool, workers: int = 2, address: str | None = None) -> dict[str, Any]:
    from cybersecqwen.answering.enrich import TASKS

    if task not in TASKS:
        raise CybersecqwenError(f"--task must be one of {', '.join(TASKS)}")
    if "://" not in source and not Path(source).exists():
        raise CybersecqwenError(f"--in {source} does not exist")
    if not no_model and not model.startswith("openai:"):
        raise CybersecqwenError("--engine ray runs the heads in every worker, with no model (--no-model) or a served one "
                                "(--model openai:URL#NAME); a local model would be loaded once per worker")
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        # One CPU per worker and one for reading: with exactly one per worker, the actors hold every CPU and the read
        # tasks that feed them never get scheduled (measured: a deadlock).
        ray.init(address=address, num_cpus=None if address else workers + 1, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # one output row per input row, in input order
        context.enable_progress_bars = True
        options = {"field": field, "task": task, "model": model, "heads": heads, "no_model": no_model,
                   "data_dir": data_dir, "download": download}
        enriched = read(ray, source).map_batches(Enricher, fn_constructor_args=(options,), batch_size=BATCH,
                                                 compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                                                 batch_format="numpy").materialize()  # computed once, then written
        counts = {"lines": 0, "enriched": 0, "errors": 0, "workers": workers}
        for row in enriched.iter_rows():
            counts["lines"] += 1
            counts["errors" if "error" in json.loads(row["line"])["cybersecqwen"] else "enriched"] += 1
        if "://" not in out and out.endswith(".jsonl"):  # one local file: streamed in order, renamed into place when complete
            target = Path(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            with partial.open("w", encoding="utf-8") as handle:
                for row in enriched.iter_rows():
                    handle.write(row["line"] + "\n")
            os.replace(partial, target)
        elif ".parquet" in out:
            enriched.map_batches(lambda b: {"record": list(b["line"])}, batch_format="numpy").write_parquet(out)
        else:
            enriched.write_json(out)  # a folder of JSONL files, one object {"line": "<enriched record as JSON>"} per row
        return counts
    finally:
        if started:
            ray.shutdown()
