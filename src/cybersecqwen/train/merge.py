"""`cybersecqwen merge RUN_DIR --out DIR`: fold the LoRA adapter into a standalone HF model folder.

The folder gets safetensors weights, the tokenizer with its chat template, and a model card naming the base,
the recipe, the corpus manifest hash and eval results when the run has them. Written to a temporary folder
and renamed, so a crash leaves no half model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError


def merge(run_dir: Path, out: Path) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run_dir / "adapter"
    summary_path = run_dir / "train-summary.json"
    if not (adapter / "adapter_config.json").is_file() or not summary_path.is_file():
        raise CybersecqwenError(f"{run_dir} holds no finished training run (no adapter/); run `cybersecqwen train` to the end first")
    if out.exists() and any(out.iterdir()):
        raise CybersecqwenError(f"--out {out} exists and is not empty; choose a new folder")
    summary = json.loads(summary_path.read_text())
    base = Path(summary["base"])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        facts = provenance(run_dir, summary)
        (staging / "README.md").write_text(model_card(facts, summary), encoding="utf-8")
        # Machine-readable provenance: `cybersecqwen export` writes it into the GGUF metadata.
        (staging / "cybersecqwen.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def provenance(run_dir: Path, summary: dict) -> dict:
    """What the model card states and `export` writes into GGUF metadata: recipe, hashes, eval headlines."""
    corpus_manifest = Path(summary["corpus"]) / "manifest.json"
    evals = {}
    for report in sorted(run_dir.glob("*/report.json")):
        data = json.loads(report.read_text())
        evals[report.parent.name] = {"protocol": data["protocol"]["name"],
                                     "scores": {task: {entry["headline"][0]: entry["metrics"].get(entry["headline"][0])}
                                                for task, entry in data["tasks"].items()}}
    from cybersecqwen.models import model_license

    return {"recipe": summary["recipe"], "base": summary["base"], "license": model_license(Path(summary["base"])),
            "recipe_sha256": summary.get("recipe_sha256"),
            "corpus_manifest_sha256": hashlib.sha256(corpus_manifest.read_bytes()).hexdigest() if corpus_manifest.is_file() else None,
            "eval": evals or None}


def model_card(facts: dict, summary: dict) -> str:
    front = ["---", f"license: {facts['license']}", "---", ""] if facts.get("license") else []
    lines = front + [f"# {summary['recipe']} (LoRA merged into {Path(summary['base']).name})", "",
             "A cybersecqwen fine-tune for defensive cyber threat intelligence. Outputs need human review; not for",
             "exploit generation or unattended security decisions.", "",
             f"- base model: `{summary['base']}`",
             f"- recipe: `{summary['recipe']}`; steps {summary['global_step']}, final train loss {summary['train_loss']:.4f}",
             f"- corpus manifest sha256: `{facts['corpus_manifest_sha256'] or 'unknown'}`",
             f"- training machine settings: `{json.dumps(summary['machine'])}`"]
    for run, result in (facts["eval"] or {}).items():
        scores = ", ".join(f"{task} {metric} {value}" for task, entry in result["scores"].items() for metric, value in entry.items())
        lines.append(f"- eval ({result['protocol']}, {run}): {scores}")
    return "\n".join(lines) + "\n"
