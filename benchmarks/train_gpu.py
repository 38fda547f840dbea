"""One LoRA training run of the real Qwen3-4B shape on a GPU: tokens/s, MFU and peak memory.

    .venv/bin/python benchmarks/train_gpu.py                       # the published recipe's shape, on CUDA
    .venv/bin/python benchmarks/train_gpu.py --tiny --device cpu   # a smoke run of this script on a CPU
    python3 benchmarks/train_gpu.py --setups checkpointing none checkpointing,optimizer=adamw_torch

Random weights from the published Qwen3-4B-Instruct-2507 config (nothing is downloaded), sequence 4096,
batch 4, bf16 weights, LoRA r=64 alpha=64 on all linear projections (the recipe in
configs/recipes/cybersecqwen-4b.yaml), gradient checkpointing as the recipe sets it. FlashAttention-2 when
installed, else SDPA; paged 8-bit AdamW when bitsandbytes is installed, else torch AdamW.

MFU counts the work a LoRA step must do, not the full fine-tune's 6N: the frozen base runs forward (2N per
token) and backward through activations (2N), with no weight gradients; attention adds 12 * layers * seq *
head_dim * heads per token (forward+backward, PaLM's count; causal halves it); LoRA's own matrices count 6 per
parameter. HFU (hardware FLOPs utilization) also counts the forward that gradient checkpointing recomputes
(another 2N and half the attention again). The peak is the GPU's dense bf16 figure (H100 SXM and H200: 989
TFLOPS; override with --peak-tflops). Several setups can run in one call (--setups), each after the last one's
memory is freed; one that runs out of GPU memory is reported as such, not as a crash.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import time

import torch

# Qwen/Qwen3-4B-Instruct-2507 config.json (the published values; the vocabulary size is the padded 151936).
QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                rope_theta=5000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY = dict(QWEN3_4B, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, vocab_size=4096)


def flops_per_token(config, seq: int, lora_params: int, recompute: bool) -> float:
    """FLOPs per trained token: without `recompute` the model's (MFU), with it what the hardware ran (HFU)."""
    layers, hidden, inter = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    heads, kv, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    per_layer = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2 + 3 * hidden * inter
    matmul_params = layers * per_layer + config.vocab_size * hidden  # the lm_head runs on every position
    passes = 3 if recompute else 2  # forward + backward-through-activations (+ recomputed forward)
    base = 2 * matmul_params * passes
    lora = 6 * lora_params  # trainable: forward, activation grads and weight grads
    attention = 12 * layers * seq * heads * head_dim / 2 * (1.5 if recompute else 1.0)  # causal
    return base + lora + attention


def refuse(message: str) -> None:
    """Bad input: one line, exit 2, before any work."""
    print(f"train_gpu: {message}", file=sys.stderr)
    sys.exit(2)


def parse_setup(text: str) -> dict:
    """`checkpointing,batch=4,optimizer=paged_adamw_8bit`-style: the first word is checkpointing or none."""
    words = text.split(",")
    if words[0] not in ("checkpointing", "none"):
        refuse(f"--setups: {text!r} must start with 'checkpointing' or 'none' (gradient checkpointing)")
    setup = {"checkpointing": words[0] == "checkpointing", "batch": None, "optimizer": "paged_adamw_8bit",
             "autocast": 1}
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key not in ("batch", "optimizer", "autocast") or not value:
            refuse(f"--setups: {word!r} in {text!r} is not batch=N, optimizer=NAME or autocast=0|1")
        setup[key] = value if key == "optimizer" else int(value)
    if setup["optimizer"] not in ("paged_adamw_8bit", "adamw_torch"):
        refuse(f"--setups: optimizer {setup['optimizer']!r} is not paged_adamw_8bit or adamw_torch")
    return setup


def make_optimizer(name: str, params, device: torch.device):
    if name == "paged_adamw_8bit":
        if device.type != "cuda":
            return torch.optim.AdamW(params, lr=5e-5), "adamw_torch (paged_adamw_8bit needs CUDA)"
        # The recipe's optimizer: a missing or broken bitsandbytes is an error here, not a quiet fallback,
        # so a measured number always names the optimizer that produced it.
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=5e-5), f"paged_adamw_8bit (bitsandbytes {bnb.__version__})"
    return torch.optim.AdamW(params, lr=5e-5), "adamw_torch"


def profile_step(step, device: torch.device) -> str:
    """One more step under torch.profiler: where the GPU time goes, the 20 operators with the most time of their own."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        step()
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort_by, row_limit=20, max_name_column_width=60)
    print(table, flush=True)
    return table


def run_setup(args, setup: dict, device: torch.device) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    batch_size = setup["batch"] or args.batch
    config = Qwen3Config(**(TINY if args.tiny else QWEN3_4B))
    attention = "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    config._attn_implementation = attention
    result = {"shape": "tiny" if args.tiny else "Qwen3-4B", "seq": args.seq, "batch": batch_size,
              "attention": attention, "gradient_checkpointing": setup["checkpointing"],
              "autocast_bf16": bool(setup["autocast"])}
    torch.manual_seed(0)
    model = optimizer = None
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config).to(torch.bfloat16)
        if setup["checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=64, lora_dropout=0.05,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        optimizer, result["optimizer"] = make_optimizer(
            setup["optimizer"], [p for p in model.parameters() if p.requires_grad], device)
        generator = torch.Generator().manual_seed(0)
        batch = torch.randint(0, config.vocab_size, (batch_size, args.seq), generator=generator).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def step() -> float:
            # bf16 autocast as the Trainer runs it with `bf16: true`: PEFT keeps the LoRA matrices in float32,
            # and without autocast their products run as float32 GEMMs with casts around them.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(setup["autocast"])):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()  # .item() synchronizes: each step's time is its own

        for _ in range(args.warmup):
            step()
        times, losses = [], []
        for _ in range(args.steps):
            started = time.perf_counter()
            losses.append(step())
            times.append(time.perf_counter() - started)
        if args.profile and setup is args.first_setup:
            result["profile"] = profile_step(step, device)
    except torch.OutOfMemoryError as error:
        result.update(error="out of GPU memory", detail=str(error).splitlines()[0][:200])
        return result
    except Exception as error:  # a broken optional library (bitsandbytes) fails its setup, not the whole call
        result.update(error=f"{type(error).__name__}: {str(error)[:300]}")
        return result
    finally:
        model = optimizer = batch = None  # free this setup's GPU memory before the next one
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    step_s = statistics.median(times)
    tokens_per_s = batch_size * args.seq / step_s
    model_flops = tokens_per_s * flops_per_token(config, args.seq, lora_params, recompute=False)
    hardware_flops = tokens_per_s * flops_per_token(config, args.seq, lora_params, recompute=setup["checkpointing"])
    result.update({
        "lora_params": lora_params, "tokens_per_s": round(tokens_per_s, 1), "step_s_median": round(step_s, 3),
        "step_s_min_max": [round(min(times), 3), round(max(times), 3)],
        "model_tflops": round(model_flops / 1e12, 1), "mfu": round(model_flops / (args.peak_tflops * 1e12), 4),
        "hfu": round(hardware_flops / (args.peak_tflops * 1e12), 4),
        "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if device.type == "cuda" else None,
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2) if device.type == "cuda" else None,
        "losses": [round(x, 4) for x in losses],
    })
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model: checks this script, measures nothing")
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="measured steps, after --warmup steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--setups", nargs="+", default=["checkpointing"],
                        help="each 'checkpointing|none[,batch=N][,optimizer=paged_adamw_8bit|adamw_torch][,autocast=0]'; "
                             "the default is the recipe")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", help="also write the results here as JSON")
    parser.add_argument("--profile", action="store_true", help="profile one more step of the first setup")
    args = parser.parse_args()
    setups = [parse_setup(text) for text in args.setups]
    args.first_setup = setups[0]

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        refuse("--device cuda: PyTorch sees no CUDA GPU here; use --tiny --device cpu for a smoke run")
    import peft
    import transformers

    header = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(header), flush=True)
    results = []
    for setup in setups:
        results.append(run_setup(args, setup, device))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({**header, "results": results}, handle, indent=1)
    print(f"{'setup':<40} {'tokens/s':>9} {'step s':>7} {'MFU':>6} {'HFU':>6} {'peak GB':>8}")
    for text, result in zip(args.setups, results):
        if "error" in result:
            print(f"{text:<40} {result['error']}")
        else:
            print(f"{text:<40} {result['tokens_per_s']:>9} {result['step_s_median']:>7} {result['mfu']:>6.1%} "
                  f"{result['hfu']:>6.1%} {result['peak_allocated_gb'] or '-':>8}")


if __name__ == "__main__":
    main()
