"""The model card of a merged model folder: README.md, rendered from the folder's cybersecqwen.json (provenance).

Evaluation results enter the card only when they were computed on these exact weights: every eval report records
the sha256 of the weights it ran on, the card records the sha256 of its own, and `record_eval` (called by `eval` on
a cybersecqwen model folder) adds a report only when the two agree, with its protocol, mode, trials and item count.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cybersecqwen.io import write_text

FACTS = "cybersecqwen.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def weights_sha256(location: Path | str) -> str | None:
    """sha256 over a model's weight files (a GGUF file, or a folder's safetensors/bin files, by name, in order)."""
    path = Path(location)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES) if path.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def eval_entry(report: dict[str, Any]) -> dict[str, Any]:
    """What the card states of one eval report: how it was run and each task's headline with its item count."""
    return {"protocol": report["protocol"]["name"], "mode": report["protocol"].get("mode"), "trials": report["protocol"].get("trials"),
            "temperature": report["protocol"].get("temperature"), "created": report.get("created"),
            "scores": {task: {"metric": entry["headline"][0], "value": entry["metrics"].get(entry["headline"][0]),
                              "n_items": entry["n_items"], "n_file_rows": entry.get("n_file_rows"),
                              "ci95": entry.get("ci95", {}).get(entry["headline"][0])}
                       for task, entry in report["tasks"].items()}}


def budget_line(budget: dict[str, Any] | None) -> str:
    """What a run trained beside its plan, in words (the card and the scorecard say it the same way)."""
    if not budget:
        return "not recorded (trained before cybersecqwen recorded budgets)"
    plan = budget["plan"]
    line = (f"{budget['examples_seen']:,} examples ({budget['epochs']:.3g} epochs of {budget['train_examples']:,}), "
            f"{budget['tokens_seen']:,} tokens, {budget['optimizer_steps']} optimizer steps of {budget['rows_per_step']} rows; "
            f"the recipe planned {plan['optimizer_steps']} steps = {plan['epochs']:.3g} epochs ({plan['set_by']})")
    if budget["epochs"] < 1.0:
        line += (". Under one epoch: a smoke-scale run that shows the pipeline works, not the recipe's result; the full "
                 "recipe (configs/recipes/cybersecqwen-4b.yaml: 10 epochs of Qwen3-4B) runs on a GPU")
    return line


def render(facts: dict[str, Any]) -> str:
    training = facts.get("training") or {}
    front = ["---", f"license: {facts['license']}", "---", ""] if facts.get("license") else []
    lines = front + [f"# {facts['recipe']} (LoRA merged into {Path(facts['base']).name})", "",
                     "A cybersecqwen fine-tune for defensive cyber threat intelligence. Outputs need human review; not for",
                     "exploit generation or unattended security decisions.", "",
                     f"- base model: `{facts['base']}`",
                     f"- recipe: `{facts['recipe']}`; steps {training.get('steps')}, final train loss {training.get('train_loss')}",
                     f"- corpus manifest sha256: `{facts.get('corpus_manifest_sha256') or 'unknown'}`",
                     f"- trained: {budget_line(training.get('budget'))}",
                     f"- weights sha256: `{facts.get('weights_sha256') or 'unknown'}`",
                     f"- training machine settings: `{json.dumps(training.get('machine'))}`", "", "## Evaluation", ""]
    evals = facts.get("eval") or {}
    if not evals:
        lines.append("No evaluation of these weights yet: `cybersecqwen eval --model THIS_FOLDER ...` adds its results here.")
    for run, result in evals.items():
        lines.append(f"- `{run}`: protocol {result['protocol']}, {result['mode']}, {result['trials']} trial(s), "
                     f"T={result['temperature']}, {result['created']}")
        for task, score in result["scores"].items():
            ci = f" [{score['ci95'][0]:.3f}, {score['ci95'][1]:.3f}]" if score.get("ci95") else ""
            value = "n/a" if score["value"] is None else f"{score['value']:.3f}"
            lines.append(f"  - {task}: {score['metric']} {value}{ci} on {score['n_items']} of {score['n_file_rows']} items")
    return "\n".join(lines) + "\n"


def write_card(folder: Path, facts: dict[str, Any]) -> None:
    write_text(folder / FACTS, json.dumps(facts, indent=2) + "\n")
    write_text(folder / "README.md", render(facts))


def record_eval(folder: Path, report: dict[str, Any], run: str) -> bool:
    """Add an eval report to a cybersecqwen model folder's card when it was computed on these weights."""
    path = folder / FACTS
    if not path.is_file():
        return False
    facts = json.loads(path.read_text(encoding="utf-8"))
    if not facts.get("weights_sha256") or facts["weights_sha256"] != report.get("model_sha256"):
        return False
    facts.setdefault("eval", {})
    facts["eval"] = {**(facts["eval"] or {}), run: eval_entry(report)}
    write_card(folder, facts)
    return True
