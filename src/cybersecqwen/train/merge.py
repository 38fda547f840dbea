"""`cybersecqwen merge RUN_DIR --out DIR`: fold the LoRA adapter into a standalone HF model folder.

The folder gets safetensors weights, the tokenizer with its chat template, and a model card (models/card.py) naming
the base, the recipe, the corpus manifest hash and the weights' sha256. Eval results enter the card only when they
were computed on these weights (`eval --model THIS_FOLDER` adds them). Written to a temporary folder and renamed,
so a crash leaves no half model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.models.card import eval_entry, weights_sha256, write_card


def merge(run_dir: Path, out: Path) -> Path:
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
    # Loaded, merged and saved in the base's own dtype: a bf16 4B base stays 8 GB in memory and on disk (in float32
    # the merge peaked at 23.4 GB RSS on this 24 GB machine, benchmarks/qwen3_4b_shape.py). PEFT computes each LoRA
    # product in float32 and rounds once into the weight.
    model = AutoModelForCausalLM.from_pretrained(base, dtype=base_dtype(base))
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        # Machine-readable provenance (cybersecqwen.json; `cybersecqwen export` writes it into the GGUF metadata)
        # and the card rendered from it.
        write_card(staging, provenance(run_dir, summary, weights_sha256(staging)))
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def base_dtype(base: Path):
    import torch

    config = json.loads((base / "config.json").read_text()) if (base / "config.json").is_file() else {}
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    value = getattr(torch, str(name).replace("torch.", ""), None)
    return value if isinstance(value, torch.dtype) else torch.float32


def provenance(run_dir: Path, summary: dict, weights: str | None) -> dict:
    """What the model card states and `export` writes into GGUF metadata: recipe, hashes, training, and the eval
    reports found in the run folder that were computed on exactly these weights (a deterministic re-merge after
    an eval of the first merge keeps them)."""
    corpus_manifest = Path(summary["corpus"]) / "manifest.json"
    evals = {}
    for report in sorted(run_dir.glob("**/report.json")):
        data = json.loads(report.read_text())
        if weights and data.get("model_sha256") == weights:
            evals[str(report.parent)] = eval_entry(data)
    from cybersecqwen.models import model_license

    return {"recipe": summary["recipe"], "base": summary["base"], "license": model_license(Path(summary["base"])),
            "recipe_sha256": summary.get("recipe_sha256"), "weights_sha256": weights,
            "corpus_manifest_sha256": hashlib.sha256(corpus_manifest.read_bytes()).hexdigest() if corpus_manifest.is_file() else None,
            "training": {"steps": summary["global_step"], "train_loss": round(summary["train_loss"], 4), "machine": summary["machine"],
                         "budget": summary.get("budget")},
            "eval": evals or None}
