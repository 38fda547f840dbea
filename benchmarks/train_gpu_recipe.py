"""The 4B recipe's own trainer on real corpus rows: tokens/s, MFU, HFU and peak memory per setting (issue 35).

    python3 benchmarks/train_gpu_recipe.py --tokenizer DIR --corpus DIR --out results.json       # on a GPU
    .venv/bin/python benchmarks/train_gpu_recipe.py --tiny --tokenizer DIR --corpus DIR          # a CPU smoke run

Unlike benchmarks/train_gpu.py (synthetic full rows through a hand-written loop), this runs `build_trainer` of
configs/recipes/cybersecqwen-4b.yaml, so TRL's collator, the attention choice, Liger and packing are the recipe's,
on a corpus built with Qwen3's real tokenizer (`cybersecqwen data build` of the 4B recipe; a slice is enough). The
model is the published Qwen3-4B-Instruct-2507 shape with random weights in bf16 (nothing is downloaded); --tiny
swaps in a 2-layer model so the script itself can be checked on a CPU (its numbers mean nothing; there the Liger
setups are refused in one line, as they must be without CUDA).

Setups (each in its own process, so peak memory is its own):
- today: the recipe as it is (4 examples a step, one padding-free row, attention per example, checkpointing);
- packed+liger: train.packing true (rows of up to 4,096 tokens filled with examples) and train.liger true;
- packed+liger, no checkpointing: the same without recomputation.

Real tokens/s counts tokens that are not padding. MFU = model FLOPs / (seconds x peak): per real token 4N for the
frozen base's forward and backward through activations (N: the matrix parameters of the decoder layers; the LM head
is left out, TRL projects only the answer positions), 6 per LoRA parameter, and attention over the real token pairs
of each example: 12 x layers x heads x head_dim x sum(len^2) / 2 per step (causal). HFU adds what checkpointing
recomputes: another 2N per token and a third of the attention. Peak: the GPU's dense bf16 figure (--peak-tflops,
989 for H100 SXM and H200). The projected 10-epoch time: 10 x 14,800 records (the published run's corpus) x this
slice's mean tokens per example / real tokens/s, beside the published ~169 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "recipes" / "cybersecqwen-4b.yaml"
# Qwen3-4B-Instruct-2507's published shape.
SHAPE = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
             num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=5_000_000.0,
             tie_word_embeddings=True, rms_norm_eps=1e-6)
TINY = dict(SHAPE, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16)
PUBLISHED_RECORDS = 14_800
SETUPS = {"today": {}, "packed+liger": {"packing": True, "liger": True},
          "packed+liger, no checkpointing": {"packing": True, "liger": True, "gradient_checkpointing": False}}


def make_model(folder: Path, tokenizer: Path, tiny: bool) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = Qwen3Config(vocab_size=len(tok), **(TINY if tiny else SHAPE))
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def flops(config, tokens: int, pair_sum: int, lora_params: int, recompute: bool) -> tuple[float, float]:
    layers, hidden, inter = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    heads, kv, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    n = layers * (hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2 + 3 * hidden * inter)
    attention = 12 * layers * heads * head_dim * pair_sum / 2
    model = 4 * n * tokens + 6 * lora_params * tokens + attention
    hardware = model + (2 * n * tokens + attention / 3 if recompute else 0)
    return model, hardware


def one(args, setup: str) -> dict:
    import torch
    from transformers import TrainerCallback

    from cybersecqwen.config import load_recipe
    from cybersecqwen.train.sft import build_trainer

    recipe = load_recipe(RECIPE)
    recipe.model.base, recipe.model.tokenizer = str(args.model), str(args.tokenizer)  # the corpus was built with it
    for key, value in SETUPS[setup].items():
        setattr(recipe.train, key, value)
    if args.tiny:
        recipe.train.optimizer = "adamw_torch"
    pairs = {"sum": 0}  # attention pairs of the real examples trained so far
    with tempfile.TemporaryDirectory() as tmp:
        trainer, machine, _ = build_trainer(recipe, args.corpus, Path(tmp), args.warmup + args.steps)
        trainer.args.save_strategy, trainer.args.logging_steps = "no", 1
        collate = trainer.data_collator

        def counting(examples):
            batch = collate(examples)
            positions = batch.get("position_ids")
            if positions is not None:
                starts = (positions[0] == 0).nonzero().flatten().tolist() + [positions.shape[1]]
                pairs["sum"] += sum((b - a) ** 2 for a, b in zip(starts, starts[1:]))
            return batch

        trainer.data_collator = counting
        marks = {}

        class Clock(TrainerCallback):
            def on_step_end(self, a, state, control, **kw):
                if state.global_step == args.warmup:
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    marks.update(start=time.perf_counter(), tokens=state.num_input_tokens_seen, pairs=pairs["sum"])

        trainer.add_callback(Clock())
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - marks["start"]
        tokens = int(trainer.state.num_input_tokens_seen - marks["tokens"])
        lora = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        config = trainer.model.get_base_model().config
        model_flops, hardware_flops = flops(config, tokens, pairs["sum"] - marks["pairs"], lora,
                                            recipe.train.gradient_checkpointing)
    peak = args.peak_tflops * 1e12
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    per_example = manifest["tokens"]["mean"]
    # The published run: 10 epochs over ~14.8k records (NOTES.md), ~169 minutes on one MI300X.
    projected = 10 * PUBLISHED_RECORDS * per_example / (tokens / seconds) / 60
    return {"setup": setup, "real_tokens_per_s": round(tokens / seconds, 1),
            "projected_10_epochs_min": round(projected, 1), "published_10_epochs_min": 169, "measured_steps": args.steps,
            "tokens": tokens, "seconds": round(seconds, 2), "mfu": round(model_flops / seconds / peak, 4),
            "hfu": round(hardware_flops / seconds / peak, 4), "machine": {k: str(v) for k, v in machine.items()},
            "gpu_peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", type=Path, required=True, help="a folder with Qwen3's tokenizer.json")
    parser.add_argument("--corpus", type=Path, required=True, help="a corpus built by the 4B recipe (manifest.json)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (args.corpus / "manifest.json").is_file():
        raise SystemExit(f"--corpus {args.corpus}: no manifest.json; build one with `cybersecqwen data build "
                         f"{RECIPE.relative_to(ROOT)}` (a slice will do)")
    if args.only:
        print("RESULT " + json.dumps(one(args, args.only)), flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as work:
        model = Path(work) / "qwen3-4b-random"
        make_model(model, args.tokenizer, args.tiny)
        for setup in args.setups:
            command = [sys.executable, __file__, "--tokenizer", str(args.tokenizer), "--corpus", str(args.corpus),
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--model", str(model),
                       "--peak-tflops", str(args.peak_tflops), "--only", setup] + (["--tiny"] if args.tiny else [])
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            row = json.loads(line[7:]) if line else {"setup": setup, "failed": done.stderr[-1500:]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
