"""Scoring saved responses of one task: extraction under a rule set, per-item statistics, metrics, CIs.

Used by `eval` (after generation), by `score` (responses from any source) and by the protocol-sensitivity
table (one set of responses under every rule set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cybersecqwen.evaluate import stats
from cybersecqwen.tasks.base import INVALID, Answer, Item, Task


@dataclass(frozen=True)
class Response:
    index: int
    trial: int
    text: str | None = None  # generated text
    choice: str | None = None  # logprob mode: the highest-scoring choice, no extraction needed


@dataclass
class TaskScore:
    rules: str
    metrics: dict[str, Any]
    ci95: dict[str, tuple[float, float]]
    per_trial: list[dict[str, Any]]
    records: list[dict[str, Any]]  # one per (item, trial): index, trial, answer, stats


def answer_of(task: Task, response: Response | None, rules: str) -> Answer:
    if response is None:
        return INVALID  # a missing response counts as unparseable
    if response.choice is not None:
        return Answer(response.choice, "proper")
    if response.text is None:  # a recorded failure (no choice could be scored): a parse failure, not an answer
        return INVALID
    return task.extract(response.text, rules)


def score_task(task: Task, items: list[Item], responses: dict[tuple[int, int], Response], rules: str,
               trials: int = 1, with_ci: bool = True, set_aside: dict[int, set[int]] | None = None) -> TaskScore:
    """`set_aside`: per trial, the rows that served as that trial's few-shot examples; they are not scored there."""
    set_aside = set_aside or {}
    rows, records = [], []
    for item in items:
        for trial in range(trials):
            if item.index in set_aside.get(trial, ()):
                rows.append(None)  # all-zero statistics (n = 0): the row counts nowhere in this trial
                continue
            answer = answer_of(task, responses.get((item.index, trial)), rules)
            record = {"index": item.index, "trial": trial, "answer": _jsonable(answer.value), "kind": answer.kind,
                      "stats": task.stats(item, answer)}
            rows.append(record["stats"])
            records.append(record)
    keys = list(records[0]["stats"]) if records else []
    matrix = np.array([[row[k] if row else 0.0 for k in keys] for row in rows], dtype=float).reshape(len(rows), len(keys))
    # Sum each item's trials into one row: the bootstrap resamples items with all their trials.
    per_item = matrix.reshape(len(items), trials, len(keys)).sum(axis=1) if records else matrix
    totals = dict(zip(keys, per_item.sum(axis=0))) if records else {}
    metrics = stats.clean(dict(task.metrics(totals, rules))) if records else {}
    per_trial = []
    if trials > 1:
        by_trial = matrix.reshape(len(items), trials, len(keys)).sum(axis=0)
        per_trial = [stats.clean(dict(task.metrics(dict(zip(keys, row)), rules))) for row in by_trial]
    ci = stats.bootstrap_ci(per_item, keys, lambda t: task.metrics(t, rules)) if with_ci and records else {}
    return TaskScore(rules, metrics, ci, per_trial, records)


def trial_summary(per_trial: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over trials of every numeric metric (Cisco reports mean ± std)."""
    if not per_trial:
        return {}
    out = {}
    for name in per_trial[0]:
        values = [t[name] for t in per_trial if isinstance(t.get(name), (int, float))]
        if len(values) == len(per_trial):
            out[name] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, frozenset):
        return sorted(value)
    return value
