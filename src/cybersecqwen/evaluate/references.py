"""Published CTI-Bench numbers, and whether one of them can stand beside a number this harness measured.

A published number is comparable with a run's number only when everything that moves it matches: the rule set
(protocol), how answers were produced (generated text or choice log-probabilities), the number of trials, the
sampling temperature (for generated answers), the item set (the whole file, or the same sample) and the metric.
Otherwise it is listed as not comparable, with the reasons in words ("logprob vs generate; 100 of 2,500 items").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import read_yaml

SETTINGS = ("protocol", "mode", "trials", "temperature", "items")


def load_references(path: Path) -> list[dict[str, Any]]:
    """A YAML list of {model, protocol, mode, trials, temperature, items, source, scores: {task: {metric: value}}}."""
    payload = read_yaml(path, "references file")
    entries = payload.get("references") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise CybersecqwenError(f"{path} must hold a top-level 'references:' list of {{model, {', '.join(SETTINGS)}, source, scores}}")
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not {"model", "scores", *SETTINGS} <= set(entry):
            missing = sorted({"model", "scores", *SETTINGS} - set(entry if isinstance(entry, dict) else {}))
            raise CybersecqwenError(f"{path}: reference #{number} lacks {', '.join(missing)} (every published number names how it "
                                    f"was produced: {', '.join(SETTINGS)})")
        if entry["mode"] not in ("generate", "logprob") or not (entry["items"] == "whole" or isinstance(entry["items"], int)):
            raise CybersecqwenError(f"{path}: reference #{number} ({entry['model']}): mode must be generate or logprob, "
                                    f"items 'whole' or a number of items")
        for task, scores in entry["scores"].items():
            if not isinstance(scores, dict) or not scores or not all(isinstance(v, (int, float)) for v in scores.values()):
                raise CybersecqwenError(f"{path}: reference #{number} ({entry['model']}) {task}: write {{metric: value}}, "
                                        f"e.g. {{accuracy: 0.71}}, so the metric is named")
    return entries


def run_settings(report: dict[str, Any], task: str, n_items: int | None = None) -> dict[str, Any]:
    """How a run produced its numbers for one task (from its report.json); n_items: the items a comparison kept."""
    entry = {**report["tasks"][task]}
    entry["n_items"] = entry["n_items"] if n_items is None else n_items
    skipped = len(entry.get("dropped_rows", [])) + len(entry.get("set_aside_rows", []))
    return {"protocol": report["protocol"]["name"], "mode": entry.get("mode", report["protocol"].get("mode", "generate")),
            "trials": entry.get("trials", {}).get("count", report["protocol"].get("trials", 1)),
            "temperature": report["protocol"].get("temperature"), "n_items": entry["n_items"],
            "whole_file": entry["n_items"] + skipped >= entry.get("n_file_rows", entry["n_items"]),
            "n_file_rows": entry.get("n_file_rows"), "metrics": entry.get("metrics", {}),
            "book": entry.get("book", "closed-book")}


def differences(reference: dict[str, Any], task: str, metric: str, settings: dict[str, Any]) -> list[str]:
    """Why a reference's number is not comparable with a run's (empty: comparable)."""
    reasons = []
    if settings.get("book", "closed-book") != reference.get("book", "closed-book"):
        # Published numbers are closed-book: a run that read the catalogs is another protocol, never set beside them.
        reasons.append(f"{settings['book'].split()[0]} vs {reference.get('book', 'closed-book')}")
    if reference["protocol"] != settings["protocol"]:
        reasons.append(f"protocol {reference['protocol']} vs {settings['protocol']}")
    if reference["mode"] != settings["mode"]:
        reasons.append(f"{settings['mode']} vs {reference['mode']}")
    if int(reference["trials"]) != int(settings["trials"]):
        reasons.append(f"{settings['trials']} vs {reference['trials']} trials")
    if settings["mode"] == "generate" == reference["mode"] and settings["temperature"] is not None \
            and abs(float(reference["temperature"]) - float(settings["temperature"])) > 1e-9:
        reasons.append(f"T={settings['temperature']:g} vs T={float(reference['temperature']):g}")
    if reference["items"] == "whole" and not settings["whole_file"]:
        reasons.append(f"{settings['n_items']:,} of {settings['n_file_rows']:,} items")
    elif reference["items"] != "whole" and int(reference["items"]) != settings["n_items"]:
        reasons.append(f"{settings['n_items']:,} vs {int(reference['items']):,} items")
    if metric not in settings["metrics"]:
        reasons.append(f"{metric} not measured by this run")
    return reasons


def placed(references: list[dict[str, Any]], task: str, settings: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(comparable, not comparable) entries for one task: {model, metric, value, source[, reasons]}. With several runs
    (compare's A and B), a reference is comparable only when it is comparable with each."""
    comparable, other = [], []
    for reference in references:
        for metric, value in reference["scores"].get(task, {}).items():
            reasons = list(dict.fromkeys(r for s in settings for r in differences(reference, task, metric, s)))
            row = {"model": reference["model"], "metric": metric, "value": float(value), "source": reference.get("source", "")}
            if reasons:
                other.append({**row, "reasons": reasons})
            else:
                comparable.append({**row, "ours": [s["metrics"].get(metric) for s in settings]})
    return comparable, other


def describe(row: dict[str, Any], runs: tuple[str, ...] = ("this run",)) -> str:
    """"GPT-4 accuracy 72.0% (this run: 70.9%)" or "... 64.4% (logprob vs generate; 1 vs 10 trials)"."""
    def value(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}" if row["metric"].endswith("mad") else f"{v:.1%}"

    text = f"{row['model']} {row['metric']} {value(row['value'])}"
    if row.get("reasons"):
        return f"{text} ({'; '.join(row['reasons'])})"
    return f"{text} ({', '.join(f'{run}: {value(v)}' for run, v in zip(runs, row.get('ours', [])))})"
