"""responses.jsonl: the append-only record of what a model said, which makes every run resumable.

Each line is one response: {"task", "index", "trial", "response"} for generated text, plus "choice" and
"logprobs" in logprob mode. Lines are appended and flushed as batches finish; a rerun reads the file and
asks the model only for what is missing. A torn last line (the process died mid-write) is dropped; a bad
line anywhere else is an error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, TextIO

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.evaluate.scoring import Response


def read_responses(path: Path, default_task: str | None = None, repair_tail: bool = False) -> dict[str, dict[tuple[int, int], Response]]:
    """Responses by task, keyed by (index, trial). Duplicated keys and malformed lines are errors."""
    out: dict[str, dict[tuple[int, int], Response]] = {}
    if not path.exists():
        return out
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CybersecqwenError(f"{path} is not UTF-8 text: {exc}") from None
    lines = raw.split("\n")
    torn_tail = repair_tail and raw and not raw.endswith("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            task = record.get("task", default_task)
            index, trial = record["index"], record.get("trial", 0)
            if not isinstance(index, int) or not isinstance(trial, int) or index < 0 or trial < 0:
                raise ValueError("index and trial must be non-negative integers")
            text, choice = record.get("response"), record.get("choice")
            if text is not None and not isinstance(text, str):
                raise ValueError("response must be a string")
            if text is None and choice is None and "failure" not in record:
                raise ValueError("missing 'response'")
        except (ValueError, KeyError) as exc:
            if torn_tail and number == len(lines):
                _truncate_tail(path, raw)
                break
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CybersecqwenError(f"{path} line {number} is malformed: {detail}") from None
        if task is None:
            raise CybersecqwenError(f"{path} line {number} has no 'task'")
        by_key = out.setdefault(task, {})
        if (index, trial) in by_key:
            raise CybersecqwenError(f"{path} line {number} duplicates index {index} (trial {trial}) of {task}")
        by_key[(index, trial)] = Response(index, trial, text, choice)
    return out


def _truncate_tail(path: Path, raw: str) -> None:
    keep = raw[: raw.rfind("\n") + 1]
    path.write_text(keep, encoding="utf-8")


def append(handle: TextIO, records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
