"""`cybersecqwen compare RUN_A RUN_B`: paired differences per task, with CIs and p-values.

Both runs are aligned on the rows they share. The difference of the headline metric gets a paired
bootstrap interval (the same resampled items for both models); binary tasks get an exact McNemar test,
continuous ones (VSP deviation, ATE item F1) a Wilcoxon signed-rank test.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.evaluate import stats
from cybersecqwen.evaluate.references import describe, load_references, placed, run_settings
from cybersecqwen.tasks import get_task


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, dict[int, list[dict[str, float]]]]]:
    report_path, items_path = run_dir / "report.json", run_dir / "items.jsonl"
    for path in (report_path, items_path):
        if not path.is_file():
            raise CybersecqwenError(f"{run_dir} is not an eval run directory (no {path.name}); run `cybersecqwen eval --out {run_dir}` first")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    per_item: dict[str, dict[int, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for number, line in enumerate(items_path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
                per_item[record["task"]][record["index"]].append(record["stats"])
            except (json.JSONDecodeError, KeyError) as exc:
                raise CybersecqwenError(f"{items_path} line {number} is malformed: {exc}") from None
    return report, per_item


def compare_runs(run_a: Path, run_b: Path, references: Path | None = None) -> dict[str, Any]:
    report_a, items_a = load_run(run_a)
    report_b, items_b = load_run(run_b)
    if report_a["protocol"]["name"] != report_b["protocol"]["name"]:
        raise CybersecqwenError(
            f"the runs used different protocols ({report_a['protocol']['name']} vs {report_b['protocol']['name']}); "
            "their numbers are not comparable"
        )
    rules = report_a["protocol"]["name"]
    out: dict[str, Any] = {"run_a": str(run_a), "run_b": str(run_b), "model_a": report_a["model"],
                           "model_b": report_b["model"], "protocol": rules, "tasks": {}}
    for name in report_a["tasks"]:
        if name not in report_b["tasks"]:
            continue
        task = get_task(name)
        shared = sorted(set(items_a[name]) & set(items_b[name]))
        if not shared:
            continue
        metric = report_a["tasks"][name]["headline"][0]
        keys = list(items_a[name][shared[0]][0])
        matrix_a = np.array([[sum(s[k] for s in items_a[name][i]) for k in keys] for i in shared])
        matrix_b = np.array([[sum(s[k] for s in items_b[name][i]) for k in keys] for i in shared])
        value_a = task.metrics(dict(zip(keys, matrix_a.sum(0))), rules)[metric]
        value_b = task.metrics(dict(zip(keys, matrix_b.sum(0))), rules)[metric]
        weights = stats.bootstrap_weights(len(shared))
        totals_a, totals_b = weights @ matrix_a, weights @ matrix_b
        boot_a = task.metrics({k: totals_a[:, j] for j, k in enumerate(keys)}, rules)[metric]
        boot_b = task.metrics({k: totals_b[:, j] for j, k in enumerate(keys)}, rules)[metric]
        diff = np.asarray(boot_b) - np.asarray(boot_a)
        diff = diff[np.isfinite(diff)]
        paired_a = np.array([np.mean([task.paired_value(s) for s in items_a[name][i]]) for i in shared])
        paired_b = np.array([np.mean([task.paired_value(s) for s in items_b[name][i]]) for i in shared])
        entry = {
            "metric": metric,
            "n_shared_items": len(shared),
            "a": stats.clean(value_a),
            "b": stats.clean(value_b),
            "difference_b_minus_a": stats.clean(value_b - value_a),
            "ci95": [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))] if diff.size else None,
            "higher_is_better": task.higher_is_better,
            "settings": [run_settings(report, name, len(shared)) for report in (report_a, report_b)],
        }
        if task.is_binary():
            entry["test"] = "mcnemar-exact"
            entry.update(stats.mcnemar(paired_a >= 0.5, paired_b >= 0.5))
        else:
            entry["test"] = "wilcoxon-signed-rank"
            entry["p_value"] = stats.wilcoxon(paired_a, paired_b)
        out["tasks"][name] = entry
    if references is not None:
        out["references"] = load_references(references)
    return out


def comparison_table(result: dict[str, Any]):
    """The `compare` verb's table, and the lines under it (sources of the published numbers, incomparable ones)."""
    from rich.table import Table

    from cybersecqwen.evaluate.report import fmt

    references = result.get("references", [])
    table = Table(title=f"B - A · protocol {result['protocol']} · A={result['model_a']} · B={result['model_b']}")
    for column in ("task", "metric", "n", "A", "B", "B - A", "95% CI", "test", "p", "published, comparable"):
        table.add_column(column)
    notes: list[str] = []
    for name, entry in result["tasks"].items():
        metric, ci = entry["metric"], entry["ci95"]
        scale = 1 if metric.endswith("mad") else 100
        comparable, other = placed(references, name, entry["settings"])
        table.add_row(name, metric, str(entry["n_shared_items"]), fmt(entry["a"], metric), fmt(entry["b"], metric),
                      f"{scale * (entry['difference_b_minus_a'] or 0):+.2f}{'' if scale == 1 else ' pts'}",
                      f"[{scale * ci[0]:+.2f}, {scale * ci[1]:+.2f}]" if ci else "", entry["test"], f"{entry['p_value']:.3g}",
                      "; ".join(describe(r, ("A", "B")) for r in comparable))
        notes += [f"{name}: {r['model']}: {r['source'] or 'no source given'}" for r in comparable]
        notes += [f"{name}: not comparable: {describe(r)}" for r in other]
    return table, notes
