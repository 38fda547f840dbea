"""report.json, report.md and report.png for one eval run; items.jsonl for paired comparisons."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cybersecqwen.io import atomic_path, png_figure, write_json, write_text

LOWER_IS_BETTER = {"mad", "strict_mad"}


def fmt(value: Any, metric: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        if metric in LOWER_IS_BETTER or metric.endswith("mad"):
            return f"{value:.2f}"
        if metric in ("n", "valid", "invalid"):
            return f"{value:.0f}"
        return f"{100 * value:.1f}%"
    return str(value)


def fmt_ci(ci: Any, metric: str) -> str:
    if not ci:
        return ""
    lo, hi = ci
    if metric.endswith("mad"):
        return f"[{lo:.2f}, {hi:.2f}]"
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def baseline_verdict(entry: dict[str, Any]) -> str:
    """Does the headline metric's 95% CI clear the trivial baseline of the answer key?"""
    metric = entry["headline"][0]
    ci = entry["ci95"].get(metric)
    baseline = entry["trivial_baseline"]["sample"].get(metric)
    if not ci or baseline is None:
        return "not enough items to tell"
    lo, hi = ci
    if entry["higher_is_better"]:
        if lo > baseline:
            return "above the trivial baseline"
        if hi < baseline:
            return "BELOW the trivial baseline"
    else:
        if hi < baseline:
            return "better than the trivial baseline"
        if lo > baseline:
            return "WORSE than the trivial baseline"
    return "not distinguishable from the trivial baseline"


def render_markdown(report: dict[str, Any]) -> str:
    protocol = report["protocol"]
    lines = [
        f"# CTI-Bench evaluation: {report['model']}",
        "",
        f"- backend: {json.dumps(report['backend']) if report['backend'] else 'none (rescored from saved responses)'}",
        f"- protocol: **{protocol['name']}** (temperature {protocol['temperature']}, trials {protocol['trials']}, "
        f"max_tokens {protocol['max_tokens']}, seed {protocol['seed']}, mode {protocol['mode']}, "
        f"system prompt: {'yes' if protocol['system_prompt'] else 'none'})",
        f"- sample: {report['sample']['strategy']}" + (f", {report['sample']['limit']} per task" if report['sample']['limit'] else "")
        + "".join(f", {name}: {n}" for name, n in report["sample"].get("task_limits", {}).items()),
        *([f"- CVE data protocol of what answered: **{cve}** (records published before CTI-Bench's test period only, or "
           "within it with the test items removed: the two are never set side by side)"]
          if (cve := ((report.get("backend") or {}).get("details") or {}).get("cve_protocol")) else []),
        f"- created {report['created']} by cybersecqwen {report['cybersecqwen_version']}",
        "",
        "## Results",
        "",
        "| task | mode | n | metric | value | 95% CI | strict / second | parse failures | trivial baseline (answer) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["tasks"].items():
        metrics = entry["metrics"]
        first, second = (entry["headline"] + [None])[:2]
        baseline = entry["trivial_baseline"]
        answer = baseline["answer"]
        answer = ", ".join(answer) if isinstance(answer, list) else answer
        trial_note = ""
        summary = entry["trials"]["summary"].get(first)
        if summary:
            trial_note = f" (trials {fmt(summary['mean'], first)} ± {fmt(summary['std'], first)})"
        lines.append(
            f"| {name} | {entry['mode']}{', **open-book**' if entry.get('book', 'closed-book') != 'closed-book' else ''} | {entry['n_items']} | {first} | {fmt(metrics.get(first), first)}{trial_note} | "
            f"{fmt_ci(entry['ci95'].get(first), first)} | {second}: {fmt(metrics.get(second), second or '')} | "
            f"{fmt(metrics.get('parse_failure_rate'))} ({fmt(metrics.get('invalid'), 'invalid')}/{fmt(metrics.get('n'), 'n')}) | "
            f"{fmt(baseline['sample'].get(first), first)} ({answer}) | {baseline_verdict(entry)} |"
        )
    lines += [
        "",
        "The trivial baseline answers every item with the answer key's majority answer (over the whole file); "
        "its value here is on the same sample. A model whose interval does not clear it has shown no knowledge "
        "on that task, whatever its raw number.",
        *([f"", "**open-book**: " + "; ".join(f"{n}: {e['book']}" for n, e in report["tasks"].items() if e.get("book", "closed-book") != "closed-book")
           + ". Published CTI-Bench numbers are closed-book (the model answers from the question alone): they are not "
             "the same protocol and are never set beside these."]
          if any(e.get("book", "closed-book") != "closed-book" for e in report["tasks"].values()) else []),
        "",
        "## Protocol sensitivity (the same responses under each rule set)",
        "",
        "| task | rule set | headline | value | second | parse failures |",
        "|---|---|---|---|---|---|",
    ]
    from cybersecqwen.tasks import get_task

    for name, entry in report["tasks"].items():
        task = get_task(name)
        for rules, metrics in entry["sensitivity"].items():
            first, second = (task.official_metric_names(rules) + [None])[:2]
            lines.append(
                f"| {name} | {rules} | {first} | {fmt(metrics.get(first), first)} | {second}: {fmt(metrics.get(second), second or '')} | "
                f"{fmt(metrics.get('parse_failure_rate'))} |"
            )
    lines += [
        "",
        "Rule sets: `ctibench` = the release's extraction and denominators (unparseable answers excluded); "
        "`cisco` = FAITH's declared patterns, strict (proper format) and lenient accuracy over all items; "
        "`robust` = this project's extractor (the one the server uses). Logprob-mode answers need no extraction.",
        "",
    ]
    return "\n".join(lines)


def render_plot(report: dict[str, Any], path: Path) -> None:
    entries = list(report["tasks"].items())
    with png_figure(path, ncols=len(entries), figsize=(2.6 * len(entries) + 1, 3.6), squeeze=False) as (fig, axes):
        for ax, (name, entry) in zip(axes[0], entries):
            metric = entry["headline"][0]
            value = entry["metrics"].get(metric)
            ci = entry["ci95"].get(metric)
            baseline = entry["trivial_baseline"]["sample"].get(metric)
            if value is not None:
                err = [[value - ci[0]], [ci[1] - value]] if ci else None
                ax.bar([0], [value], yerr=err, capsize=6, color="#4472c4", width=0.5)
            if baseline is not None:
                ax.axhline(baseline, color="#c00000", linestyle="--", label="trivial baseline")
            ax.set_title(f"{name}\n{metric}", fontsize=9)
            ax.set_xticks([])
            if not metric.endswith("mad"):
                ax.set_ylim(0, 1)
            ax.legend(fontsize=7, loc="upper right")
        fig.suptitle(f"{report['model']} · protocol {report['protocol']['name']} · 95% bootstrap CI", fontsize=10)


def write_all(out: Path, report: dict[str, Any]) -> None:
    items = {name: entry.pop("items", []) for name, entry in report["tasks"].items()}
    with atomic_path(out / "items.jsonl") as tmp:
        with tmp.open("w", encoding="utf-8") as handle:
            for name, records in items.items():
                for record in records:
                    handle.write(json.dumps({"task": name, **record}, ensure_ascii=False) + "\n")
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    render_plot(report, out / "report.png")
