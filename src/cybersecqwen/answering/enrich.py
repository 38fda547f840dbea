"""`cybersecqwen enrich`: stream a JSONL of alerts through a structured task, resumably, for SIEM pipelines.

Each input line gives exactly one output line, in order: the original record plus a `cybersecqwen` object
(the result, or an `error` saying why that line could not be enriched). After an interruption the run
resumes after the last complete output line: a torn last line is cut, nothing is done twice, nothing is
skipped. `--stix` also writes a STIX 2.1 bundle (stix2 objects, validated as they are built).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cybersecqwen.answering.service import CtiService
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import write_text
from cybersecqwen.progress import bars

TASKS = ("cwe", "attack")


def completed_lines(out: Path) -> int:
    """Complete lines already in `out`; a torn last line (killed mid-write) is cut off."""
    if not out.exists():
        return 0
    data = out.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with out.open("r+b") as handle:
            handle.truncate(keep)
    return data[:keep].count(b"\n")


def enrich_record(service: CtiService, line: str, field: str, task: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"raw": line[:2000], "cybersecqwen": {"error": f"not a JSON object: {exc.msg}"}}
    if not isinstance(record, dict):
        return {"raw": line[:2000], "cybersecqwen": {"error": "not a JSON object"}}
    text = record.get(field)
    if not isinstance(text, str) or not text.strip():
        record["cybersecqwen"] = {"error": f"no text in field '{field}'"}
        return record
    text = text[:20_000]
    result = service.classify_cwe(text) if task == "cwe" else service.extract_attack(text)
    record["cybersecqwen"] = {"task": task, **result}
    return record


def check_arguments(source: Path, out: Path, task: str) -> None:
    """The user's mistakes, named before a model is loaded."""
    if task not in TASKS:
        raise CybersecqwenError(f"--task must be one of {', '.join(TASKS)}")
    if not source.is_file():
        raise CybersecqwenError(f"--in {source} does not exist")
    if out.resolve() == source.resolve():
        raise CybersecqwenError("--out must differ from --in")


def enrich_file(model: str, backend_kind: str, source: Path, out: Path, field: str, task: str, stix: Path | None = None,
                data_dir: Path | None = None, download: bool = False, heads: Path | None = None,
                no_model: bool = False) -> dict[str, int]:
    """The `enrich` verb: check the arguments, load the model, heads and catalogs, enrich, close the model."""
    from cybersecqwen.answering.loading import load_service, serving_backend

    check_arguments(source, out, task)
    if no_model and heads is None:
        raise CybersecqwenError("--no-model enriches with the heads alone: pass --heads DIR")
    backend = serving_backend(model, backend_kind, no_model)
    try:
        return enrich(load_service(backend, data_dir, download, False, heads, model), source, out, field, task, stix)
    finally:
        if backend is not None:
            backend.close()


def enrich(service: CtiService, source: Path, out: Path, field: str, task: str, stix: Path | None = None) -> dict[str, int]:
    check_arguments(source, out, task)
    total = sum(1 for _ in source.open("rb"))
    done = completed_lines(out)
    if done > total:
        raise CybersecqwenError(f"{out} has {done} lines but {source} only {total}: it belongs to another input; choose a new --out")
    counts = {"lines": total, "resumed_at": done, "enriched": 0, "errors": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with source.open("r", encoding="utf-8", errors="replace") as reader, out.open("a", encoding="utf-8") as writer, progress() as bar:
        task_bar = bar.add_task(f"enrich ({task})", total=total, completed=done)
        for number, line in enumerate(reader):
            if number < done:
                continue
            record = enrich_record(service, line.rstrip("\n"), field, task)
            counts["errors" if "error" in record["cybersecqwen"] else "enriched"] += 1
            writer.write(json.dumps(record, ensure_ascii=False) + "\n")
            writer.flush()
            if number % 50 == 0:
                os.fsync(writer.fileno())
            bar.advance(task_bar)
    if stix is not None:
        write_text(stix, stix_bundle(iter_jsonl(out), task).serialize(pretty=True))
    return counts


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def stix_bundle(records: Iterator[dict[str, Any]], task: str):
    """CWE task: a `vulnerability` per record with its CVE and CWE references. ATT&CK task: one `attack-pattern`
    per technique, a `grouping` per alert, and `related-to` relationships carrying evidence and confidence."""
    import stix2

    objects: list = []
    patterns: dict[str, Any] = {}
    for number, record in enumerate(records):
        result = record.get("cybersecqwen", {})
        if "error" in result:
            continue
        name = str(record.get("cve_id") or record.get("id") or f"alert-{number + 1}")[:200]
        if task == "cwe":
            references = [{"source_name": "cwe", "external_id": c["cwe_id"], "url": c["url"],
                           "description": f"{c['name']} (confidence {c['confidence']:.2f})"} for c in result["candidates"]]
            if name.startswith("CVE-"):
                references.insert(0, {"source_name": "cve", "external_id": name})
            objects.append(stix2.Vulnerability(name=name, external_references=references,
                                               labels=["needs-review"] if result["needs_review"] else None))
            continue
        if not result.get("techniques"):
            continue
        for technique in result["techniques"]:
            if technique["technique_id"] not in patterns:
                patterns[technique["technique_id"]] = stix2.AttackPattern(
                    name=technique["name"], external_references=[{"source_name": "mitre-attack", "external_id": technique["technique_id"],
                                                                  "url": technique["url"]}])
        group = stix2.Grouping(name=name, context="suspicious-activity",
                               object_refs=[patterns[t["technique_id"]].id for t in result["techniques"]])
        objects.append(group)
        for technique in result["techniques"]:
            objects.append(stix2.Relationship(group.id, "related-to", patterns[technique["technique_id"]].id,
                                              description=f"evidence: {technique['evidence'][:500]} (confidence {technique['confidence']:.2f})"))
    return stix2.Bundle(objects=list(patterns.values()) + objects, allow_custom=False)


def progress():
    return bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
