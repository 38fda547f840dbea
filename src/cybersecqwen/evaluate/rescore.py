"""`cybersecqwen score`: score saved responses of one task without any model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.evaluate.responses import read_responses
from cybersecqwen.evaluate.scoring import score_task
from cybersecqwen.tasks import get_task


def rescore(task_name: str, responses_path: Path, protocol: str = "ctibench", data_dir: Path | None = None,
            download: bool = False) -> dict[str, Any]:
    task = get_task(task_name)
    task.check_protocol(protocol)
    if not responses_path.is_file():
        raise CybersecqwenError(f"responses file {responses_path} does not exist")
    by_task = read_responses(responses_path, default_task=task_name)
    if not by_task:
        raise CybersecqwenError(f"{responses_path} is empty: expected one JSON object per line with 'index' and 'response'")
    other = [name for name in by_task if name != task_name]
    if other:
        raise CybersecqwenError(f"{responses_path} holds responses of {', '.join(other)}, not only {task_name}")
    responses = by_task[task_name]
    items = task.load(data_dir, download)
    out_of_range = sorted(index for index, _ in responses if index >= len(items))
    if out_of_range:
        raise CybersecqwenError(
            f"{responses_path}: index {out_of_range[0]} is out of range ({task_name} has rows 0..{len(items) - 1})"
        )
    skipped = task.skipped_indexes(protocol)
    items = [item for item in items if item.index not in skipped]
    trials = 1 + max(trial for _, trial in responses)
    scored = score_task(task, items, responses, protocol, trials, with_ci=False)
    return {
        "task": task_name,
        "protocol": protocol,
        "trials": trials,
        "official": {name: scored.metrics.get(name) for name in task.official_metric_names(protocol)},
        "metrics": scored.metrics,
        "dropped_rows": sorted(skipped),
    }
