"""LoRA SFT tokens/s on this CPU: the CPU recipe's setup vs a plain SFTTrainer with its defaults, same data.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_cpu.py --corpus runs/corpus --steps 10

Both train the embedded SmolLM2-135M with the same LoRA (the recipe's r, alpha, targets), batch size, max
length and examples, for the same number of steps; the table gives input tokens/s and the loss at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cybersecqwen.config import load_recipe
from cybersecqwen.train.sft import base_model_dir, build_trainer, read_corpus


def run(trainer) -> dict:
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "final_loss": result.training_loss}


def plain_trainer(recipe, corpus: Path, out: Path, steps: int):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(out), use_cpu=True, max_steps=steps, per_device_train_batch_size=recipe.train.per_device_batch_size,
                     max_length=recipe.train.max_length, learning_rate=recipe.train.learning_rate, report_to="none",
                     save_strategy="no", include_num_input_tokens_seen="all", seed=recipe.train.seed, dataset_num_proc=1)
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
        ours, _, _ = build_trainer(recipe, args.corpus, Path(tmp) / "ours", args.steps)
        ours.args.save_strategy = "no"
        rows["cybersecqwen recipe (bf16 autocast, length-grouped, sdpa)"] = run(ours)
        rows["plain SFTTrainer defaults (same LoRA)"] = run(plain_trainer(recipe, args.corpus, Path(tmp) / "plain", args.steps))
    print("| setup | tokens/s | tokens | seconds | final train loss |\n|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['tokens_per_s']:.0f} | {row['tokens']} | {row['seconds']:.0f} | {row['final_loss']:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
