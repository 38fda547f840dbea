"""Peak memory and speed of the CPU recipe on its longest examples, with and without gradient checkpointing.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_checkpointing.py --corpus runs/demo/corpus

The 16 longest training examples (in the base model's tokens) become a small corpus, so 4 optimizer steps of the
recipe's 1 x 4 setup meet the activations that set the demo's training peak; each setting runs in a fresh process
(peak RSS is per process). Reports real tokens/s, peak RSS and the per-step losses (they should be identical).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def longest(corpus: Path, out: Path, recipe_path: Path, n: int = 16) -> None:
    from transformers import AutoTokenizer

    from cybersecqwen.config import load_recipe
    from cybersecqwen.train.sft import base_model_dir

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir(load_recipe(recipe_path)))
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines() if line.strip()]
    lengths = [len(tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False))["input_ids"]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])[:n]
    out.mkdir(parents=True)
    (out / "train.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in order))
    for name in ("val.jsonl", "manifest.json"):
        shutil.copy(corpus / name, out / name)
    print(f"longest {n}: {lengths[order[-1]]}-{lengths[order[0]]} tokens", file=sys.stderr)


def child(recipe_path: Path, corpus: Path, checkpointing: bool, steps: int) -> None:
    from cybersecqwen.config import load_recipe
    from cybersecqwen.train.sft import build_trainer

    recipe = load_recipe(recipe_path)
    recipe.train.gradient_checkpointing = checkpointing
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _, _ = build_trainer(recipe, corpus, Path(tmp) / "run", steps)
        trainer.args.save_strategy, trainer.args.logging_steps = "no", 1
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    print(json.dumps({"checkpointing": checkpointing, "tokens_per_s": trainer.state.num_input_tokens_seen / seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
                      "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=Path("configs/recipes/smollm2-135m-cpu.yaml"))
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.recipe, args.child, bool(args.checkpointing), args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "longest"
        longest(args.corpus, small, args.recipe)
        for setting in (0, 1):
            out = subprocess.run([sys.executable, __file__, "--recipe", str(args.recipe), "--corpus", str(args.corpus), "--steps",
                                  str(args.steps), "--child", str(small), "--checkpointing", str(setting)],
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
