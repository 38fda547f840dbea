"""What one padding-free row costs in memory on the CPU, and what distinct row lengths leave behind.

    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_row_memory.py --corpus runs/demo/corpus

The CPU recipe's trainer (embedded SmolLM2-135M, bf16 autocast, no gradient checkpointing), driven by hand:
1. one row of ~500 and one of ~250 tokens: resident memory sampled every 2 ms across forward and backward;
2. forward+backward over 25 rows of 25 different lengths, then over one row 25 times, with malloc_trim after each
   (each in a fresh process): resident memory after every row. Growth with new lengths and none with the same one
   is a cache keyed by shape (oneDNN's kernels), not a leak (run the `lengths` child under
   ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 to see that cache's share and its speed);
3. how much padding `train.pad_to_multiple_of` adds over the whole training split (one example per row).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_gb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def trainer_for(recipe_path: Path, corpus: Path, tmp: str):
    from cybersecqwen.config import load_recipe
    from cybersecqwen.train.sft import build_trainer

    recipe = load_recipe(recipe_path)
    recipe.train.gradient_checkpointing, recipe.train.gradient_checkpointing_above = False, None
    recipe.train.pad_to_multiple_of = None
    trainer, _, _ = build_trainer(recipe, corpus, Path(tmp) / "run", 2)
    trainer.model.train()
    return trainer


def step(trainer, batch) -> None:
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    trainer.model.zero_grad(set_to_none=True)


def rows(args) -> None:
    import torch

    peak = [0.0]

    def sample() -> None:  # the peak of resident memory, read every 2 ms
        while True:
            peak[0] = max(peak[0], rss_gb())
            time.sleep(0.002)

    threading.Thread(target=sample, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(args.recipe, args.corpus, tmp)
        batches = [b for _, b in zip(range(60), trainer.get_train_dataloader())]
        for want in (500, 250):
            batch = min(batches, key=lambda b: abs(b["input_ids"].numel() - want))
            peak[0], before = 0.0, rss_gb()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = trainer.compute_loss(trainer.model, dict(batch))
            forward_peak, after_forward = peak[0], rss_gb()
            loss.backward()
            trainer.model.zero_grad(set_to_none=True)
            print(json.dumps({"tokens": batch["input_ids"].numel(), "rss_before": round(before, 2),
                              "peak_forward": round(forward_peak, 2), "after_forward": round(after_forward, 2),
                              "peak_backward": round(peak[0], 2)}), flush=True)


def lengths(args, same: bool) -> None:
    libc = ctypes.CDLL("libc.so.6")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(args.recipe, args.corpus, tmp)
        batches = [b for _, b in zip(range(40), trainer.get_train_dataloader()) if b["input_ids"].numel() < 400][:25]
        batches = [batches[0]] * 25 if same else batches
        after, started = [], time.perf_counter()
        for batch in batches:
            step(trainer, batch)
            libc.malloc_trim(0)
            after.append(round(rss_gb(), 3))
        print(json.dumps({"rows": "the same row 25 times" if same else "25 rows",
                          "distinct_lengths": len({b["input_ids"].numel() for b in batches}),
                          "seconds": round(time.perf_counter() - started, 1), "rss_after_each_gb": after}))


def padding(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(args.recipe, args.corpus, tmp)
        sizes = [len(row["input_ids"]) for row in trainer.train_dataset]
    for multiple in (16, 32, 64):
        added = sum(-n % multiple for n in sizes)
        print(json.dumps({"pad_to_multiple_of": multiple, "tokens": sum(sizes), "padding": added,
                          "share": round(added / sum(sizes), 4), "distinct_lengths": len({n + (-n % multiple) for n in sizes}),
                          "distinct_lengths_unpadded": len(set(sizes))}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=Path("configs/recipes/smollm2-135m-cpu.yaml"))
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--child", choices=["rows", "lengths", "same", "padding"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return {"rows": rows, "padding": padding}.get(args.child, lambda a: lengths(a, args.child == "same"))(args)
    for child in ("rows", "lengths", "same", "padding"):
        out = subprocess.run([sys.executable, __file__, "--recipe", str(args.recipe), "--corpus", str(args.corpus),
                              "--child", child], capture_output=True, text=True, check=True)
        print("\n".join(line for line in out.stdout.splitlines() if line.startswith("{")), flush=True)


if __name__ == "__main__":
    main()
