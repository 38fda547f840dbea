"""Peak memory and speed of the CPU recipe with gradient checkpointing off, on every micro-batch, or only on long ones.

    # the demo's own 90 steps (same examples in the same order for every setup):
    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_checkpointing.py \
        --corpus runs/demo/corpus --steps 90 --setups off 512
    # the corpus's 16 longest examples, the rows that set the peak:
    CYBERSECQWEN_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_checkpointing.py \
        --corpus runs/demo/corpus --longest 16 --steps 4 --setups off all 512

A setup is `off`, `all` (every micro-batch recomputes its activations) or a number N (`train.gradient_checkpointing_above`:
only micro-batches of more than N tokens do), optionally with `+mmap` (glibc's mmap threshold fixed at 1 MiB), `+trim` (malloc_trim after each optimizer
step) and `+padN` (`train.pad_to_multiple_of: N`). Each setup runs in a fresh process (peak RSS is per process) with the
recipe's seed, so every setup sees the same examples in the same order. Reports real tokens/s, peak RSS and the largest
per-step loss difference to the first setup (checkpointing recomputes, it must not change the losses).
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


def longest(corpus: Path, out: Path, recipe_path: Path, n: int) -> None:
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


def child(recipe_path: Path, corpus: Path, setup: str, steps: int) -> None:
    from cybersecqwen.config import load_recipe
    from cybersecqwen.train.sft import build_trainer

    checkpointing, *allocator = setup.split("+")
    if "mmap" in allocator:
        # glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which activations
        # come from the heap, fragment it and stay resident; a fixed threshold keeps them in mmap'd blocks.
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB, fixed
    recipe = load_recipe(recipe_path)
    recipe.train.gradient_checkpointing = checkpointing != "off"
    recipe.train.gradient_checkpointing_above = int(checkpointing) if checkpointing.isdigit() else None
    recipe.train.pad_to_multiple_of = next((int(a[3:]) for a in allocator if a.startswith("pad")), None)
    import os

    from transformers import TrainerCallback

    rss_after_step: list[float] = []

    class RecordRss(TrainerCallback):  # resident memory after each optimizer step: growth vs one-step peaks
        def on_step_end(self, *args, **kwargs):
            rss_after_step.append(int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9)

    callbacks = [RecordRss()]
    if "trim" in allocator:
        # Free heap pages back to the system after every optimizer step (glibc malloc_trim).
        import ctypes

        libc = ctypes.CDLL("libc.so.6")

        class Trim(TrainerCallback):
            def on_step_end(self, *args, **kwargs):
                libc.malloc_trim(0)

        callbacks.insert(0, Trim())
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _, _ = build_trainer(recipe, corpus, Path(tmp) / "run", steps, callbacks)
        trainer.args.save_strategy, trainer.args.logging_steps = "no", 1
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    print(json.dumps({"setup": setup, "seconds": round(seconds, 1), "tokens": trainer.state.num_input_tokens_seen,
                      "tokens_per_s": trainer.state.num_input_tokens_seen / seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
                      "rss_after_step_gb": [round(x, 3) for x in rss_after_step],
                      "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=Path("configs/recipes/smollm2-135m-cpu.yaml"))
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--longest", type=int, help="train on this many of the corpus's longest examples only")
    parser.add_argument("--setups", nargs="+", default=["off", "all"], help="off, all, or a token threshold N")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for setup in args.setups:
        checkpointing, *allocator = setup.split("+")
        if (checkpointing not in ("off", "all") and not checkpointing.isdigit()) or any(a not in ("mmap", "trim") and not (a.startswith("pad") and a[3:].isdigit()) for a in allocator):
            parser.error(f"--setups: {setup!r} is not off, all or a token count, optionally with +mmap, +trim or +padN")
    if args.child:
        return child(args.recipe, args.child, args.setup, args.steps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if args.longest:
            corpus = Path(tmp) / "longest"
            longest(args.corpus, corpus, args.recipe, args.longest)
        for setup in args.setups:
            out = subprocess.run([sys.executable, __file__, "--recipe", str(args.recipe), "--corpus", str(args.corpus),
                                  "--steps", str(args.steps), "--child", str(corpus), "--setup", setup],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(f"| setup | real tokens/s | vs {base['setup']} | peak RSS GB | largest per-step loss difference |")
    print("|---|---|---|---|---|")
    for row in rows:
        gap = max(abs(a - b) for a, b in zip(row["losses"], base["losses"]))
        print(f"| {row['setup']} | {row['tokens_per_s']:.0f} | {row['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
              f"{row['peak_rss_gb']:.2f} | {gap:.4f} |")


if __name__ == "__main__":
    main()
