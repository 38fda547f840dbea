"""Peak memory and speed of the CPU recipe's training with the padding-free row bounded: the same examples in the same
order per optimizer step, split into smaller rows by gradient accumulation.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_memory.py --corpus runs/demo/corpus --steps 8

A padding-free batch is one row holding every example of the batch; with SDPA on the CPU its block-diagonal mask and
attention weights grow with the square of the row (4 x 1,024 tokens at the recipe's settings). Each setup runs in a
fresh process (peak RSS is per process) for the same optimizer steps: batch 4 x accumulation 1 (the recipe until
now), 2 x 2 and 1 x 4 (rows of at most 2,048 and 1,024 tokens). Reports real tokens/s, peak RSS and the largest
per-step loss difference to the first setup (the same examples, so the losses should agree closely).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETUPS = [(4, 1), (2, 2), (1, 4)]


def child(recipe_path: Path, corpus: Path, steps: int, batch: int, accumulation: int) -> None:
    from cybersecqwen.config import load_recipe
    from cybersecqwen.train.sft import build_trainer

    recipe = load_recipe(recipe_path)
    recipe.train.per_device_batch_size, recipe.train.gradient_accumulation = batch, accumulation
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _, _ = build_trainer(recipe, corpus, Path(tmp) / "run", steps)
        trainer.args.save_strategy, trainer.args.logging_steps = "no", 1
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({"batch": batch, "accumulation": accumulation, "seconds": seconds, "tokens": trainer.state.num_input_tokens_seen,
                      "final_loss": result.training_loss, "losses": losses,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=Path("configs/recipes/smollm2-135m-cpu.yaml"))
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.recipe, args.corpus, args.steps, *args.child)
        return
    rows = []
    for batch, accumulation in SETUPS:
        out = subprocess.run([sys.executable, __file__, "--recipe", str(args.recipe), "--corpus", str(args.corpus), "--steps",
                              str(args.steps), "--child", str(batch), str(accumulation)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print("| batch x accumulation (longest row) | real tokens/s | vs 4 x 1 | peak RSS GB | final train loss | largest per-step loss difference |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        speed = row["tokens"] / row["seconds"]
        gap = max(abs(a - b) for a, b in zip(row["losses"], base["losses"]))
        print(f"| {row['batch']} x {row['accumulation']} ({row['batch'] * 1024} tokens) | {speed:.0f} | "
              f"{speed / (base['tokens'] / base['seconds']):.2f}x | {row['peak_rss_gb']:.2f} | {row['final_loss']:.3f} | {gap:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
