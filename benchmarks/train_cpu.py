"""LoRA SFT tokens/s and peak memory on this CPU: today's CPU recipe vs one packed forward per step, same examples.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_cpu.py --corpus runs/corpus --steps 20

Both train the recipe's model (the embedded SmolLM2-135M) with its LoRA, precision, learning rate and seed, on the
same real corpus examples in the same order, 4 examples per optimizer step:
- "one example per forward": per_device_batch_size 1 x gradient_accumulation 4 (the demo recipe until issue 34);
- "one packed forward": per_device_batch_size 4 x gradient_accumulation 1, the four examples concatenated into one
  padding-free row with attention per example (train.attention: packed).
Each setup runs in its own process, so the peak RSS is its own. Tokens/s counts real (non-padding) tokens over the
whole run (the first step included); the per-step loss difference shows the two learn the same thing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (batch, accumulation, attention, recompute activations of micro-batches over N tokens, LM head on answer positions
# only, cheaper LoRA dropout): the packed row holds four examples, so its threshold is four times the one-example
# row's (the same examples are recomputed).
SETUPS = {"today: one example per forward": (1, 4, "sdpa", 512, False, False),
          "one example per forward, LM head on answers": (1, 4, "sdpa", 512, True, False),
          "one packed forward, LM head on answers": (4, 1, "packed", 2048, True, False),
          "one packed forward, LM head on answers, 15-bit dropout": (4, 1, "packed", 2048, True, True)}


def one(recipe_path: Path, corpus: Path, steps: int, setup: str) -> dict:
    from cybersecqwen.config import load_recipe
    from cybersecqwen.train import sft

    recipe = load_recipe(recipe_path)
    batch, accumulation, attention, above, answer_only, fast_dropout = SETUPS[setup]
    if not answer_only:  # TRL's own CPU behaviour: the vocabulary projection of every position
        from cybersecqwen.train import answer_head

        answer_head.project_answer_positions_only = lambda: False
    if not fast_dropout:  # PEFT's nn.Dropout
        from cybersecqwen.train import lora_dropout

        lora_dropout.use_fast_dropout = lambda model: 0
    recipe.train.per_device_batch_size, recipe.train.gradient_accumulation, recipe.train.attention = batch, accumulation, attention
    recipe.train.gradient_checkpointing, recipe.train.gradient_checkpointing_above = True, above
    with tempfile.TemporaryDirectory() as tmp:
        trainer, machine, _ = sft.build_trainer(recipe, corpus, Path(tmp), steps)
        trainer.args.save_strategy, trainer.args.logging_steps = "no", 1
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "final_loss": result.training_loss,
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h], "precision": machine["precision"],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=Path("configs/recipes/smollm2-135m-cpu.yaml"))
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print("RESULT " + json.dumps(one(args.recipe, args.corpus, args.steps, args.only)))
        return
    rows = {}
    for setup in SETUPS:
        command = [sys.executable, __file__, "--recipe", str(args.recipe), "--corpus", str(args.corpus),
                   "--steps", str(args.steps), "--only", setup]
        output = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        line = next((l for l in output.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{setup} failed:\n{output.stderr[-3000:]}")
        rows[setup] = json.loads(line[len("RESULT "):])
    base = next(iter(rows.values()))
    print(f"# {args.steps} optimizer steps of 4 examples, {args.recipe.name}, precision {base['precision']}")
    print("| setup | tokens/s | speed-up | real tokens | seconds | peak RSS GB | final train loss | largest per-step loss difference |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        gap = max(abs(a - b) for a, b in zip(row["losses"], base["losses"]))
        print(f"| {name} | {row['tokens_per_s']:.0f} | {row['tokens_per_s'] / base['tokens_per_s']:.2f}x | {row['tokens']} | "
              f"{row['seconds']:.0f} | {row['peak_rss_gb']:.2f} | {row['final_loss']:.3f} | {gap:.4f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
