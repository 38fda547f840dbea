"""`cybersecqwen data audit FILE.jsonl`: overlap of any training file with every CTI-Bench split.

Each line's text is every string in it (chat messages, prompt/response pairs, plain text), so files in the
common SFT formats need no conversion. The instruction templates of CTI-Bench are not items: only item text
(questions, descriptions, reports), CVE ids and item URLs count.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterator

from cybersecqwen.corpus.decontam import BenchmarkIndex
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.progress import track


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from strings_in(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from strings_in(inner)


def read_examples(path: Path) -> list[str]:
    if not path.is_file():
        raise CybersecqwenError(f"training file {path} does not exist")
    texts = []
    with path.open(encoding="utf-8", errors="strict") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CybersecqwenError(f"{path} line {number} is not JSON: {exc.msg}") from None
                texts.append("\n".join(strings_in(record)))
        except UnicodeDecodeError as exc:
            raise CybersecqwenError(f"{path} is not UTF-8 text: {exc}") from None
    if not texts:
        raise CybersecqwenError(f"{path} is empty: expected one JSON object per line")
    return texts


def audit_file(path: Path, data_dir: Path | None = None, index: BenchmarkIndex | None = None) -> dict[str, Any]:
    texts = read_examples(path)
    index = index or BenchmarkIndex.build(data_dir)
    examples_by_split: Counter[str] = Counter()
    items_by_split: dict[str, set[int]] = defaultdict(set)
    reasons: Counter[tuple[str, str]] = Counter()
    flagged_examples = 0
    samples = []
    for number, text in enumerate(track(texts, description="auditing"), start=1):
        hits = index.check(text)
        if not hits:
            continue
        flagged_examples += 1
        for split in {h.split for h in hits}:
            examples_by_split[split] += 1
        for hit in hits:
            items_by_split[hit.split].add(hit.index)
            reasons[(hit.split, hit.reason)] += 1
        if len(samples) < 20:
            samples.append({"line": number, "hits": [vars(h) for h in hits[:5]]})
    splits = {}
    for split, size in index.split_sizes.items():
        splits[split] = {
            "examples_overlapping": examples_by_split[split],
            "items_hit": len(items_by_split[split]),
            "items_in_split": size,
            "share_of_split_items": len(items_by_split[split]) / size if size else 0.0,
            "by_reason": {reason: count for (s, reason), count in sorted(reasons.items()) if s == split},
        }
    return {
        "file": str(path),
        "examples": len(texts),
        "examples_overlapping_any_split": flagged_examples,
        "share_overlapping": flagged_examples / len(texts),
        "splits": splits,
        "first_hits": samples,
    }


def audit_table(path: Path, result: dict[str, Any]):
    """The `data audit` verb's table: per CTI-Bench split, how many examples overlap it and why."""
    from rich.table import Table

    table = Table(title=f"{path}: {result['examples_overlapping_any_split']} of {result['examples']} examples overlap CTI-Bench")
    for column in ("split", "examples overlapping", "items hit", "share of the split", "by reason"):
        table.add_column(column)
    for split, entry in result["splits"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in entry["by_reason"].items())
        table.add_row(split, str(entry["examples_overlapping"]), f"{entry['items_hit']}/{entry['items_in_split']}",
                      f"{100 * entry['share_of_split_items']:.1f}%", reasons)
    return table
