"""`cybersecqwen export gguf MODEL --out DIR`: convert, gate on parity, quantize, measure, write the report.

Order: F32 file (temporary) must tokenize and decode greedily exactly like transformers -> the F16 file must
pick transformers' next token at >= 98% of teacher-forced positions -> only then is F16 kept and quantized ->
each file answers a fixed CTI-MCQ sample (log-prob mode) for accuracy and top-1 agreement with F16 ->
export-report.json/md, a size-vs-accuracy PNG and an Ollama Modelfile. A failed gate writes the report,
keeps no GGUF, and fails the command.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path
from typing import Any

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.export import parity
from cybersecqwen.export.convert import convert, open_source
from cybersecqwen.export.modelfile import write_modelfile
from cybersecqwen.export.plan import load_shape, plan
from cybersecqwen.export.quantize import quantize
from cybersecqwen.io import png_figure, write_json, write_text

log = logging.getLogger(__name__)


def provenance(model_dir: Path) -> dict[str, Any]:
    """What `cybersecqwen merge` recorded about the model (recipe, corpus manifest hash, eval results)."""
    path = model_dir / "cybersecqwen.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    from cybersecqwen.models import model_license

    # The license the model declares (merge records the base's; a card or config may state it), never a guess.
    return {"name": data.get("recipe", model_dir.name), "base_model": data.get("base"),
            "license": data.get("license") or model_license(model_dir),
            "data_manifest_sha256": data.get("corpus_manifest_sha256"), "recipe_sha256": data.get("recipe_sha256"),
            "eval_results": json.dumps(data["eval"]) if data.get("eval") else None}


def export_gguf(model: str, out: Path, quant: str, base_type: str = "F16", imatrix: Path | None = None, mcq_items: int = 40,
                data_dir: Path | None = None, download: bool = False, context: int = 4096) -> dict[str, Any]:
    """The `export gguf` verb: check the options before any work, then export (`embedded`: the embedded model)."""
    from cybersecqwen.export.quantize import check_imatrix, parse_quants
    from cybersecqwen.models import hf_folder

    quants = parse_quants(quant)
    check_imatrix(imatrix)
    return export_model(hf_folder(model, "MODEL"), out, quants, base_type.upper(), mcq_items, data_dir, download, context)


def export_model(model_dir: Path, out: Path, quants: list[str], base_type: str = "F16", mcq_items: int = 40,
                 data_dir: Path | None = None, download: bool = False, context: int = 4096) -> dict[str, Any]:
    source = open_source(model_dir)  # refuses a non-model, an unsupported architecture or missing tokenizer first
    if out.exists() and any(p.suffix == ".gguf" for p in out.iterdir()):
        raise CybersecqwenError(f"--out {out} already holds GGUF files; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    meta = provenance(model_dir)
    stem = meta["name"]
    report: dict[str, Any] = {"model": str(model_dir), "architecture": source.architecture, "files": {}, "gates": {}}
    model, tokenizer = parity.load_hf(model_dir)
    reference = parity.reference(model, tokenizer)
    del model  # freed before any GGUF is written or opened (a 4B model in float32 is 16 GB)
    gc.collect()

    started = time.perf_counter()
    f32 = out / f".{stem}-F32.parity.gguf"
    try:
        convert(model_dir, f32, "F32", meta)
        with parity.loaded(f32) as llm:
            report["gates"]["f32_tokenization"] = parity.tokenization(tokenizer, llm)
            report["gates"]["f32_greedy"] = parity.greedy(reference, tokenizer, llm)
    finally:
        f32.unlink(missing_ok=True)
    base_file = out / f"{stem}-{base_type}.gguf"
    staged = out / f".{stem}-{base_type}.staged.gguf"
    convert(model_dir, staged, base_type, meta)
    with parity.loaded(staged) as llm:
        report["gates"][f"{base_type.lower()}_tokenization"] = parity.tokenization(tokenizer, llm)
        report["gates"][f"{base_type.lower()}_teacher_forced"] = parity.teacher_forced(reference, llm)
    report["conversion_seconds"] = round(time.perf_counter() - started, 1)
    failed = [name for name, gate in report["gates"].items() if not gate["passed"]]
    if failed:
        staged.unlink(missing_ok=True)
        report["passed"] = False
        write_reports(out, report)
        raise CybersecqwenError(f"parity gate failed ({', '.join(failed)}); no GGUF kept; see {out / 'export-report.md'}")
    staged.replace(base_file)
    report["passed"] = True
    report["files"][base_type] = {"path": base_file.name, "bytes": base_file.stat().st_size}
    for quant in quants:
        if quant == base_type:
            continue
        target = out / f"{stem}-{quant}.gguf"
        quantize(base_file, target, quant)
        report["files"][quant] = {"path": target.name, "bytes": target.stat().st_size}
    predicted = {row["quant"]: row for row in plan(load_shape(model_dir), context)}
    for name, entry in report["files"].items():
        if name in predicted:
            entry["predicted_bytes"] = int(predicted[name]["file_gb"] * 1e9)
            entry["predicted_ram_bytes"] = int(predicted[name]["ram_gb"] * 1e9)
    report["memory_plan_context"] = context
    report["quality"] = mcq_quality(out, report["files"], base_type, mcq_items, data_dir, download)
    modelfile_target = quants[-1] if quants else base_type
    report["modelfile"] = write_modelfile(out, out / report["files"][modelfile_target]["path"], tokenizer, context).name
    write_reports(out, report)
    return report


def mcq_quality(out: Path, files: dict, base_type: str, items: int, data_dir: Path | None, download: bool) -> dict[str, Any]:
    """CTI-MCQ log-prob accuracy of every file on the same seeded sample, and top-1 agreement with the base file."""
    from cybersecqwen.evaluate.runner import EvalConfig, run_eval
    from cybersecqwen.tasks import get_task

    if items <= 0:
        return {"skipped": "--mcq-items 0"}
    try:
        get_task("cti-mcq").load(data_dir, download)
    except CybersecqwenError as exc:
        return {"skipped": f"CTI-MCQ data unavailable: {exc}"}
    results, picks, baseline = {}, {}, {}
    for name, entry in files.items():
        run_dir = out / "quality" / name
        report = run_eval(EvalConfig(model=str(out / entry["path"]), tasks={"cti-mcq": items}, out=run_dir, mode="logprob",
                                     data_dir=data_dir, download=download))
        task = report["tasks"]["cti-mcq"]
        # The baseline of the items actually scored (the majority answer of the whole key, on this sample).
        baseline = {"answer": task["trivial_baseline"]["answer"], "accuracy": task["trivial_baseline"]["sample"]["accuracy"]}
        results[name] = {"accuracy": task["metrics"]["accuracy"], "ci95": task["ci95"]["accuracy"],
                         "parse_failure_rate": task["metrics"].get("parse_failure_rate", 0.0)}
        records = [json.loads(line) for line in (run_dir / "items.jsonl").read_text().splitlines() if line.strip()]
        picks[name] = {record["index"]: record.get("answer") for record in records}
    for name in results:
        same = [picks[name][i] == picks[base_type].get(i) for i in picks[name]]
        results[name]["top1_agreement_with_" + base_type.lower()] = sum(same) / len(same) if same else None
    return {"items": items, "mode": "logprob", "protocol": "ctibench", "results": results, "trivial_baseline": baseline}


def write_reports(out: Path, report: dict[str, Any]) -> None:
    write_json(out / "export-report.json", report)
    write_text(out / "export-report.md", render_markdown(report))
    if report.get("quality", {}).get("results"):
        plot(out, report)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Export of {report['model']} ({report['architecture']})", "", "## Parity gates", "",
             "| gate | result | detail |", "|---|---|---|"]
    for name, gate in report["gates"].items():
        if "agreement" in gate:
            detail = f"{gate['agreement']:.2%} of {gate['positions']} positions (threshold {gate['threshold']:.0%})"
        elif "identical" in gate:
            detail = f"{gate['identical']}/{len(gate['prompts'])} prompts identical"
        else:
            detail = f"{gate['strings'] - len(gate['mismatches'])}/{gate['strings']} strings identical"
        lines.append(f"| {name} | {'pass' if gate['passed'] else 'FAIL'} | {detail} |")
    if report["files"]:
        quality = report.get("quality", {}).get("results", {})
        lines += ["", "## Files", "", "| file | MB | predicted MB | predicted RAM MB (ctx "
                  f"{report.get('memory_plan_context')}) | CTI-MCQ accuracy [95% CI] | top-1 agreement with base |",
                  "|---|---|---|---|---|---|"]
        for name, entry in report["files"].items():
            q = quality.get(name, {})
            acc = f"{q['accuracy']:.1%} [{q['ci95'][0]:.1%}, {q['ci95'][1]:.1%}]" if q.get("accuracy") is not None else "n/a"
            agree = next((v for k, v in q.items() if k.startswith("top1_agreement")), None)
            lines.append(f"| {entry['path']} | {entry['bytes'] / 1e6:.1f} | {entry.get('predicted_bytes', 0) / 1e6:.1f} | "
                         f"{entry.get('predicted_ram_bytes', 0) / 1e6:.0f} | {acc} | {f'{agree:.1%}' if agree is not None else 'n/a'} |")
        if report.get("quality", {}).get("skipped"):
            lines += ["", f"Quality check skipped: {report['quality']['skipped']}"]
        elif quality:
            base = report["quality"]["trivial_baseline"]
            lines += ["", f"CTI-MCQ: {report['quality']['items']} seeded items, log-prob mode, the same items for every file; "
                      f"trivial baseline (always {base['answer']}) {base['accuracy']:.1%} on these items."]
    if report.get("modelfile"):
        lines += ["", f"Ollama: `ollama create cti -f {report['modelfile']}` in this folder; LM Studio and llama.cpp load the .gguf files directly."]
    return "\n".join(lines) + "\n"


def plot(out: Path, report: dict[str, Any]) -> None:
    with png_figure(out / "export-size-accuracy.png", figsize=(6, 4)) as (fig, ax):
        for name, q in report["quality"]["results"].items():
            size = report["files"][name]["bytes"] / 1e6
            low, high = q["ci95"]
            ax.errorbar([size], [q["accuracy"]], yerr=[[q["accuracy"] - low], [high - q["accuracy"]]], fmt="o", capsize=4)
            ax.annotate(name, (size, q["accuracy"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        base = report["quality"]["trivial_baseline"]
        ax.axhline(base["accuracy"], color="#c00000", linestyle="--", label=f"always {base['answer']} ({base['accuracy']:.1%})")
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel("CTI-MCQ accuracy (log-prob)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.set_title(f"GGUF size vs accuracy, {report['quality']['items']} items, 95% CI", fontsize=10)
