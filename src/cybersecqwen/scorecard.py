"""The scorecard of `cybersecqwen run`: base vs tuned vs quantized on the same items, honestly read.

Per task and protocol: each model's headline metric with its 95% CI, parse-failure rate and the trivial
baseline of the answer key; paired tests (tuned vs base, quantized vs tuned); and the split of a change
into *formatting* (fewer unparseable answers) and *knowledge* (accuracy on the items both models answered
in a parseable way). Published reference numbers sit beside, only under the protocol that produced them.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from cybersecqwen.datafiles import cve_protocol
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.evaluate.compare import compare_runs
from cybersecqwen.evaluate.references import describe, load_references, placed, run_settings
from cybersecqwen.io import png_figure, write_json, write_text
from cybersecqwen.models.card import budget_line

MODELS = (("base", "eval-base"), ("tuned", "eval-tuned"), ("quantized", "eval-quant"), ("heads", "eval-heads"),
          ("fused", "eval-fused"))
# Paired comparisons (A, B) shown as "B vs A", on the items both answered.
PAIRS = (("base", "tuned"), ("tuned", "quantized"), ("heads", "tuned"), ("heads", "quantized"), ("heads", "fused"))
LABELS = {"heads": "heads (same corpus, no LLM)", "fused": "fused (heads + quantized model)"}


def read_items(run_dir: Path) -> dict[str, dict[int, list[dict]]]:
    out: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for line in (run_dir / "items.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            out[record["task"]][record["index"]].append(record)
    return out


def answer_chance(records: dict[int, list[dict]], gold: dict[int, Any]) -> float | None:
    """Accuracy expected if the model's answers were independent of the questions: sum over answers of
    (share of the model's answers) x (share of the key). A model that only shifted its answer distribution
    toward the key's common answers scores about this much with no knowledge at all."""
    answers = Counter(str(r["answer"]) for i in records for r in records[i] if r["kind"] != "invalid")
    keys = Counter(str(gold[i]) for i in records if i in gold)
    total_answers, total_keys = sum(answers.values()), sum(keys.values())
    if not total_answers or not total_keys:
        return None
    valid_share = total_answers / sum(len(v) for v in records.values())
    return valid_share * sum(count / total_answers * keys.get(answer, 0) / total_keys for answer, count in answers.items())


def format_vs_knowledge(task_name: str, base: dict[int, list[dict]], tuned: dict[int, list[dict]],
                        gold: dict[int, Any] | None = None) -> dict[str, Any] | None:
    """For right/wrong tasks: parse-failure change, and accuracy on the items both answered validly."""
    from cybersecqwen.tasks import get_task

    task = get_task(task_name)
    if not task.is_binary():
        return None
    shared = sorted(set(base) & set(tuned))

    def valid(records):
        return all(r["kind"] != "invalid" for r in records)

    def correct(records):
        return sum(task.paired_value(r["stats"]) for r in records) / len(records)

    both = [i for i in shared if valid(base[i]) and valid(tuned[i])]
    answers = Counter(str(r["answer"]) for i in shared for r in tuned[i] if r["kind"] != "invalid")
    top, top_count = answers.most_common(1)[0] if answers else (None, 0)
    return {
        "items": len(shared),
        "parse_failures_base": sum(not valid(base[i]) for i in shared) / len(shared) if shared else None,
        "parse_failures_tuned": sum(not valid(tuned[i]) for i in shared) / len(shared) if shared else None,
        "both_parseable": len(both),
        "accuracy_base_on_both": sum(correct(base[i]) for i in both) / len(both) if both else None,
        "accuracy_tuned_on_both": sum(correct(tuned[i]) for i in both) / len(both) if both else None,
        "tuned_most_common_answer": top,
        "tuned_most_common_share": top_count / sum(answers.values()) if answers else None,
        "base_answer_chance": answer_chance({i: base[i] for i in shared}, gold) if gold else None,
        "tuned_answer_chance": answer_chance({i: tuned[i] for i in shared}, gold) if gold else None,
    }


def gold_answers(pipeline, task_name: str) -> dict[int, Any]:
    """The task's answer key by row. A missing or unreadable data file raises CybersecqwenError: the caller writes
    what failed into the scorecard instead of leaving the analysis out."""
    from cybersecqwen.tasks import get_task

    return {item.index: item.gold for item in get_task(task_name).load(pipeline.data_dir, pipeline.download)}


def verdict(entry: dict[str, Any], higher_is_better: bool) -> str:
    value, ci, baseline = entry.get("value"), entry.get("ci95"), entry.get("baseline")
    if value is None or baseline is None or not ci:
        return "n/a"
    if higher_is_better:
        return "clears the trivial baseline" if ci[0] > baseline else "does NOT clear the trivial baseline"
    return "clears the trivial baseline" if ci[1] < baseline else "does NOT clear the trivial baseline"


def build(pipeline) -> dict[str, Any]:
    out = pipeline.out
    card: dict[str, Any] = {"recipe": pipeline.recipe.name, "protocols": {}, "train": pipeline.state.get("train", {}),
                            "cve_protocol": cve_protocol(pipeline.recipe.data.sources),
                            "stages": {k: v.get("seconds") for k, v in pipeline.state["stages"].items()}}
    export_report = out / "gguf" / "export-report.json"
    if export_report.is_file():
        report = json.loads(export_report.read_text())
        card["gguf"] = {name: entry["bytes"] for name, entry in report["files"].items()}
    references = load_references(pipeline.references) if pipeline.references and pipeline.references.is_file() else []
    gold: dict[str, dict[int, Any]] = {}  # each task's answer key, read once for all protocols
    for protocol in pipeline.eval.protocols:
        runs = {label: out / folder / protocol for label, folder in MODELS if (out / folder / protocol / "report.json").is_file()}
        if "base" not in runs:
            continue
        reports = {label: json.loads((path / "report.json").read_text()) for label, path in runs.items()}
        items = {label: read_items(path) for label, path in runs.items()}
        tasks = {}
        for task_name, base_entry in reports["base"]["tasks"].items():
            metric = base_entry["headline"][0]
            row: dict[str, Any] = {"metric": metric, "higher_is_better": base_entry["higher_is_better"], "n_items": base_entry["n_items"],
                                   # how each model was scored: log-probabilities of the choices, or generation + parsing
                                   "modes": {label: report["tasks"][task_name].get("mode") for label, report in reports.items()
                                             if task_name in report["tasks"]},
                                   "trivial_baseline": base_entry["trivial_baseline"]["sample"].get(metric),
                                   "trivial_answer": base_entry["trivial_baseline"]["answer"], "models": {}}
            for label, report in reports.items():
                entry = report["tasks"].get(task_name)
                if entry:
                    model = {"value": entry["metrics"].get(metric), "ci95": entry["ci95"].get(metric), "n_items": entry["n_items"],
                             "parse_failure_rate": entry["metrics"].get("parse_failure_rate"), "baseline": row["trivial_baseline"],
                             "book": entry.get("book", "closed-book")}
                    model["verdict"] = verdict(model, row["higher_is_better"])
                    row["models"][label] = model
            for a, b in PAIRS:
                if a in runs and b in runs:
                    paired = compare_runs(runs[a], runs[b])["tasks"].get(task_name)
                    if paired:
                        row[f"{b}_vs_{a}"] = {k: paired.get(k) for k in ("difference_b_minus_a", "ci95", "p_value", "test")}
            if "tuned" in items:
                try:
                    if task_name not in gold:
                        gold[task_name] = gold_answers(pipeline, task_name)
                    row["format_vs_knowledge"] = format_vs_knowledge(task_name, items["base"][task_name], items["tuned"][task_name],
                                                                     gold[task_name])
                except CybersecqwenError as exc:  # said in the scorecard, never an empty section
                    row["format_vs_knowledge_failed"] = f"the answer-bias analysis could not run: {exc}"
            # Per run: the published numbers produced exactly as it was (protocol, mode, trials, T, items, metric).
            row["references"] = {label: placed(references, task_name, [run_settings(report, task_name)])[0]
                                 for label, report in reports.items() if task_name in report["tasks"]}
            row["not_comparable"] = placed(references, task_name, [run_settings(reports["base"], task_name)])[1]
            tasks[task_name] = row
        card["protocols"][protocol] = tasks
    return card


def heads_verdicts(row: dict[str, Any], percent: bool) -> list[str]:
    """In words: does each language model beat the heads trained on the same corpus (the learned baseline)?"""
    heads = row["models"].get("heads")
    if not heads or heads.get("value") is None:
        return []
    better = (lambda a, b: a > b) if row["higher_is_better"] else (lambda a, b: a < b)
    lines = []
    for label in ("tuned", "quantized", "fused"):
        model = row["models"].get(label)
        if not model or model.get("value") is None:
            continue
        paired = row.get(f"{label}_vs_heads") or {}
        p = f" (paired p = {paired['p_value']:.3g} on shared items)" if paired.get("p_value") is not None else ""
        significant = paired.get("p_value") is not None and paired["p_value"] < 0.05
        verb = ("beats" if significant else "is above, not significantly,") if better(model["value"], heads["value"]) else "does NOT beat"
        book = (" (the heads answer open-book, reading the catalogs; the model answers from the question alone)"
                if heads.get("book", "closed-book") != "closed-book" else "")
        lines.append(f"\nThe {LABELS.get(label, label)} {verb} the heads trained on the same corpus: "
                     f"{fmt(model['value'], percent)} vs {fmt(heads['value'], percent)}{p}{book}.")
    return lines


def points(model: dict | None, chance: float | None) -> str:
    if not model or model.get("value") is None or chance is None:
        return "n/a"
    return f"{100 * (model['value'] - chance):+.1f} points"


def fmt(value, percent: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if percent else f"{value:.2f}"


MODE_WORDS = {"logprob": "log-probabilities of the choices after the trained answer's prefix (no generation, no parsing)",
              "generate": "generation, then the protocol's answer rules"}


def tuned_vs_base(row: dict[str, Any], percent: bool) -> str | None:
    """In words: did training move this task, measured in the same mode for both models?"""
    paired, tuned, base = row.get("tuned_vs_base"), row["models"].get("tuned"), row["models"].get("base")
    if not paired or not tuned or not base or paired.get("p_value") is None or paired.get("difference_b_minus_a") is None:
        return None
    better = paired["difference_b_minus_a"] > 0 if row["higher_is_better"] else paired["difference_b_minus_a"] < 0
    significant = paired["p_value"] < 0.05
    said = ("the tuned model beats its base" if better and significant else
            "the tuned model is WORSE than its base" if significant else "the tuned model does NOT significantly differ from its base")
    return f"\n**Did training teach this task?** {said} (paired p = {paired['p_value']:.3g}); tuned {tuned['verdict']}."


def markdown(card: dict[str, Any], serve_hint: str) -> str:
    lines = [f"# Scorecard: {card['recipe']}", "",
             "Same seeded items for every model. 95% bootstrap CIs; paired tests on shared items (McNemar exact for",
             "right/wrong tasks, Wilcoxon for scores). The trivial baseline is the answer key's most common answer.", ""]
    if card.get("cve_protocol"):
        lines += [f"**CVE data protocol**: {card['cve_protocol']} (what the tuned model and the heads learned from; CTI-RCM's "
                  "and CTI-VSP's items were published in 2024).", ""]
    budget = (card.get("train") or {}).get("budget")
    if card.get("train"):
        lines += [f"**What the tuned model trained**: {budget_line(budget)}.", ""]
    for protocol, tasks in card["protocols"].items():
        lines += [f"## Protocol: {protocol}", ""]
        for task_name, row in tasks.items():
            percent = not row["metric"].endswith("mad")
            lines += [f"### {task_name} ({row['metric']}, {row['n_items']} items; trivial baseline "
                      f"'{row['trivial_answer']}' = {fmt(row['trivial_baseline'], percent)})", "",
                      ]
            modes = set((row.get("modes") or {}).values())
            if len(modes) == 1:
                lines += [f"Scored for every model by {MODE_WORDS.get(next(iter(modes)), next(iter(modes)))}.", ""]
            elif modes:
                lines += ["Scored in DIFFERENT modes (not comparable): " + ", ".join(f"{k} {v}" for k, v in row["modes"].items()), ""]
            lines += ["| model | items | value | 95% CI | parse failures | verdict |", "|---|---|---|---|---|---|"]
            for label, model in row["models"].items():
                ci = model["ci95"]
                ci_text = f"[{fmt(ci[0], percent)}, {fmt(ci[1], percent)}]" if ci else "n/a"
                book = "" if model.get("book", "closed-book") == "closed-book" else " (**open-book**: read the catalogs)"
                lines.append(f"| {LABELS.get(label, label)}{book} | {model.get('n_items', row['n_items'])} | {fmt(model['value'], percent)} | "
                             f"{ci_text} | {fmt(model['parse_failure_rate'])} | {model['verdict']} |")
            said = tuned_vs_base(row, percent)
            if said:
                lines.append(said)
            lines += heads_verdicts(row, percent)
            for key in (f"{b}_vs_{a}" for a, b in PAIRS):
                if key in row:
                    d = row[key]
                    ci = d["ci95"]
                    text = f"\n{key.replace('_', ' ')}: difference {fmt(d['difference_b_minus_a'], percent)}"
                    text += f" [{fmt(ci[0], percent)}, {fmt(ci[1], percent)}]" if ci else ""
                    text += f", p = {d['p_value']:.3g} ({d['test']})" if d.get("p_value") is not None else ""
                    lines.append(text)
            if row.get("format_vs_knowledge_failed"):
                lines.append(f"\nFormatting vs knowledge: NOT computed: {row['format_vs_knowledge_failed']}")
            split = row.get("format_vs_knowledge")
            if split and split["items"]:
                lines.append(
                    f"\nFormatting vs knowledge: parse failures {fmt(split['parse_failures_base'])} -> {fmt(split['parse_failures_tuned'])}; "
                    f"on the {split['both_parseable']} items both answered, accuracy {fmt(split['accuracy_base_on_both'])} -> "
                    f"{fmt(split['accuracy_tuned_on_both'])}. The tuned model's most common answer is '{split['tuned_most_common_answer']}' "
                    f"({fmt(split['tuned_most_common_share'])} of its answers)"
                    + (": it has largely collapsed to one answer, so its accuracy mostly tracks that answer's share of the key."
                       if (split['tuned_most_common_share'] or 0) >= 0.8 else ".")
                    + (f" Answering independently of the questions with the same answer distribution would score "
                       f"{fmt(split['base_answer_chance'])} (base) and {fmt(split['tuned_answer_chance'])} (tuned), so accuracy above "
                       f"that answer-bias level is {points(row['models'].get('base'), split['base_answer_chance'])} (base) and "
                       f"{points(row['models'].get('tuned'), split['tuned_answer_chance'])} (tuned): only that part is knowledge."
                       if split.get("tuned_answer_chance") is not None else ""))
            for label, comparable in row.get("references", {}).items():
                if comparable:
                    lines.append(f"\nPublished, comparable with the {LABELS.get(label, label)} run (same protocol, mode, trials, "
                                 f"temperature, items and metric): " + "; ".join(describe(r) for r in comparable) + ".")
            if row.get("not_comparable"):
                lines.append("\nPublished, NOT comparable with the base run (what differs): "
                             + "; ".join(describe(r) for r in row["not_comparable"]) + ".")
            lines.append("")
    lines += curve_lines(card.get("curve") or [])
    train = card.get("train") or {}
    if train:
        lines += ["## Training cost", "", f"{train.get('steps')} steps, {train.get('tokens')} tokens, {train.get('wall_seconds')} s wall, "
                  f"final train loss {fmt(train.get('train_loss'), False)}, peak RSS {train.get('peak_rss_gb')} GB.", ""]
    if card.get("gguf"):
        lines += ["## GGUF files", "", " · ".join(f"{name} {size / 1e6:.1f} MB" for name, size in card["gguf"].items()), ""]
    lines += ["## Stage times (s)", "", " · ".join(f"{k} {v}" for k, v in card["stages"].items() if v is not None), "",
              "## Serve the result", "", f"    {serve_hint}", ""]
    return "\n".join(lines)


def curve_lines(curve: list[dict[str, Any]]) -> list[str]:
    """The learning curve as a table: corpus-validation accuracy and answer loss at each measured step."""
    if not curve:
        return []
    lines = ["## Learning curve (corpus validation)", "",
             f"The same {curve[0]['items'].get('cti-mcq', 0)} MCQ and {curve[0]['items'].get('cti-rcm', 0)} RCM validation "
             "examples at each point, scored in the trained form (MCQ letters by log-probability, RCM greedy reply); step 0 "
             "is the base model. Validation questions are the corpus's own, not CTI-Bench's.", "",
             "| step | epoch | MCQ accuracy | RCM accuracy | answer loss |", "|---|---|---|---|---|"]
    for row in curve:
        lines.append(f"| {row['step']} | {row['epoch']:.2f} | {fmt(row['mcq_accuracy'])} | {fmt(row['rcm_accuracy'])} | "
                     f"{row['val_loss']:.3f} |")
    return lines + [""]


def plot_curve(ax, curve: list[dict[str, Any]]) -> None:
    steps = [row["step"] for row in curve]
    for key, label, color in (("mcq_accuracy", "MCQ accuracy", "#4472c4"), ("rcm_accuracy", "RCM accuracy", "#70ad47")):
        ax.plot(steps, [row[key] if row[key] is not None else float("nan") for row in curve], "o-", color=color, label=label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    loss = ax.twinx()
    loss.plot(steps, [row["val_loss"] for row in curve], "s--", color="#7f7f7f", label="answer loss")
    loss.set_ylabel("answer loss", fontsize=8)
    ax.set_title("learning curve\n(corpus validation)", fontsize=9)
    handles = ax.get_legend_handles_labels()[0] + loss.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7)


def plot(card: dict[str, Any], path: Path) -> None:
    panels = [(p, t, row) for p, tasks in card["protocols"].items() for t, row in tasks.items()]
    curve = card.get("curve") or []
    if not panels and not curve:
        return
    columns = len(panels) + (1 if curve else 0)
    with png_figure(path, ncols=columns, figsize=(3.2 * columns + 1, 3.8), squeeze=False) as (fig, axes):
        if curve:
            plot_curve(axes[0][-1], curve)
        colors = {"base": "#a5a5a5", "tuned": "#4472c4", "quantized": "#70ad47", "heads": "#ed7d31", "fused": "#7030a0"}
        for ax, (protocol, task_name, row) in zip(axes[0], panels):
            for x, (label, model) in enumerate(row["models"].items()):
                if model["value"] is None:
                    continue
                ci = model["ci95"]
                err = [[model["value"] - ci[0]], [ci[1] - model["value"]]] if ci else None
                ax.bar([x], [model["value"]], yerr=err, capsize=5, color=colors[label], label=label)
            if row["trivial_baseline"] is not None:
                ax.axhline(row["trivial_baseline"], color="#c00000", linestyle="--", label="trivial baseline")
            ax.set_xticks([])
            ax.set_title(f"{task_name} · {protocol}\n{row['metric']}", fontsize=9)
            if not row["metric"].endswith("mad"):
                ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
        fig.suptitle(f"{card['recipe']}: base vs tuned vs quantized (95% CI)", fontsize=10)


def write_scorecard(pipeline) -> dict[str, Any]:
    card = build(pipeline)
    gguf = None
    try:
        gguf = pipeline.quant_file()
    except (FileNotFoundError, KeyError):
        pass
    hint = f"cybersecqwen serve --model {gguf}" if gguf else f"cybersecqwen serve --model {pipeline.out / 'merged'}"
    heads = pipeline.output("heads") / "model"
    if (heads / "manifest.json").is_file():
        hint += f" --heads {heads}"  # the server fuses them with the model (fusion.json holds the learned weights)
    from cybersecqwen.train.curve import read_curve

    card["curve"] = read_curve(pipeline.output("train"))
    write_json(pipeline.out / "scorecard.json", card)
    plot(card, pipeline.out / "scorecard.png")
    write_text(pipeline.out / "scorecard.md", markdown(card, hint))
    return card
