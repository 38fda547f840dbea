"""LoRA SFT tokens/s on this CPU: the CPU recipe's setup vs a plain SFTTrainer with its defaults, same data.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_cpu.py --corpus runs/corpus --steps 10

Both train the embedded SmolLM2-135M with the same LoRA (the recipe's r, alpha, targets), batch size, max
length, seed and therefore the same examples in the same order, for the same number of steps. Tokens/s counts
real (non-padding) tokens; "equal loss behaviour" is checked step by step (largest per-step loss difference).
The plain setup is SFTTrainer's defaults: padded batches, gradient checkpointing on, bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cybersecqwen.config import load_recipe
from cybersecqwen.train.sft import base_model_dir, build_trainer, read_corpus


def run(trainer, tokens: int | None = None) -> dict:
    trainer.args.logging_steps = 1
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = tokens or trainer.state.num_input_tokens_seen
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "final_loss": result.training_loss,
            "losses": losses}


def plain_trainer(recipe, corpus: Path, out: Path, steps: int):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(out), use_cpu=True, max_steps=steps, per_device_train_batch_size=recipe.train.per_device_batch_size,
                     max_length=recipe.train.max_length, learning_rate=recipe.train.learning_rate, report_to="none",
                     save_strategy="no", seed=recipe.train.seed, dataset_num_proc=1, disable_tqdm=True,
                     include_num_input_tokens_seen="non_padding",
                     lr_scheduler_type=recipe.train.lr_scheduler, warmup_steps=recipe.train.warmup_ratio)
    peft = LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                      target_modules=recipe.lora.target_modules, task_type="CAUSAL_LM")
    return SFTTrainer(model=str(base_model_dir(recipe)), args=args, train_dataset=Dataset.from_list(read_corpus(corpus, "train")),
                      peft_config=peft)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=Path("configs/recipes/smollm2-135m-cpu.yaml"))
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain = plain_trainer(recipe, args.corpus, Path(tmp) / "plain", args.steps)
        # Padded batches carry an attention mask, so its non-padding count is exact; the padding-free run sees the
        # same examples in the same order and is credited with the same number.
        rows["plain SFTTrainer defaults (padded, gradient checkpointing, bf16 autocast)"] = plain_row = run(plain)
        tokens = plain_row["tokens"]
        ours, _, _ = build_trainer(recipe, args.corpus, Path(tmp) / "ours", args.steps)
        ours.args.save_strategy = "no"
        rows["cybersecqwen recipe (padding-free, no checkpointing, bf16 autocast)"] = run(ours, tokens)
    base = next(iter(rows.values()))
    print("| setup | tokens/s | speed-up | real tokens | seconds | final train loss | largest per-step loss difference |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        gap = max(abs(a - b) for a, b in zip(row["losses"], base["losses"]))
        print(f"| {name} | {row['tokens_per_s']:.0f} | {row['tokens_per_s'] / base['tokens_per_s']:.2f}x | {row['tokens']} | "
              f"{row['seconds']:.0f} | {row['final_loss']:.3f} | {gap:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
