"""One LoRA training run of the real Qwen3-4B shape on a GPU: tokens/s, MFU and peak memory.

    .venv/bin/python benchmarks/train_gpu.py                       # the published recipe's shape, on CUDA
    .venv/bin/python benchmarks/train_gpu.py --tiny --device cpu   # a smoke run of this script on a CPU

Random weights from the published Qwen3-4B-Instruct-2507 config (nothing is downloaded), sequence 4096,
batch 4, bf16 weights, LoRA r=64 alpha=64 on all linear projections (the recipe in
configs/recipes/cybersecqwen-4b.yaml), gradient checkpointing as the recipe sets it. FlashAttention-2 when
installed, else SDPA; paged 8-bit AdamW when bitsandbytes is installed, else torch AdamW.

MFU counts the work a LoRA step really does, not the full fine-tune's 6N: the frozen base runs forward
(2N per token), backward through activations (2N) and the recomputed forward under checkpointing (2N);
attention adds 12 * layers * seq * head_dim * heads per token (forward+backward, PaLM's count; causal
halves it); LoRA's own matrices are counted too. The peak is the GPU's dense bf16 figure (H100 SXM 989,
H200 989 TFLOPS; override with --peak-tflops).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import torch

# Qwen/Qwen3-4B-Instruct-2507 config.json (the published values; the vocabulary size is the padded 151936).
QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                rope_theta=5000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY = dict(QWEN3_4B, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, vocab_size=4096)


def flops_per_token(config, seq: int, lora_params: int, checkpointing: bool) -> float:
    layers, hidden, inter = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    heads, kv, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    per_layer = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2 + 3 * hidden * inter
    matmul_params = layers * per_layer + config.vocab_size * hidden  # the lm_head runs on every position
    passes = 3 if checkpointing else 2  # forward + backward-through-activations (+ recomputed forward)
    base = 2 * matmul_params * passes
    lora = 6 * lora_params  # trainable: forward, activation grads and weight grads
    attention = 12 * layers * seq * heads * head_dim / 2 * (1.5 if checkpointing else 1.0)  # causal
    return base + lora + attention


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model: checks this script, measures nothing")
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="measured steps, after --warmup steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    device = torch.device(args.device)
    config = Qwen3Config(**(TINY if args.tiny else QWEN3_4B))
    attention = "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    config._attn_implementation = attention
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    checkpointing = not args.no_checkpointing
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=64, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if device.type == "cuda" and importlib.util.find_spec("bitsandbytes"):
        import bitsandbytes as bnb

        optimizer, optimizer_name = bnb.optim.PagedAdamW8bit(trainable, lr=5e-5), "paged_adamw_8bit"
    else:
        optimizer, optimizer_name = torch.optim.AdamW(trainable, lr=5e-5), "adamw_torch"

    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens_per_s = args.batch * args.seq * args.steps / seconds
    achieved = tokens_per_s * flops_per_token(config, args.seq, lora_params, checkpointing)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": "tiny" if args.tiny else "Qwen3-4B", "seq": args.seq, "batch": args.batch, "attention": attention,
        "optimizer": optimizer_name, "gradient_checkpointing": checkpointing, "lora_params": lora_params,
        "tokens_per_s": round(tokens_per_s, 1), "step_s": round(seconds / args.steps, 3),
        "tflops": round(achieved / 1e12, 1), "mfu": round(achieved / (args.peak_tflops * 1e12), 4),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if device.type == "cuda" else None,
        "losses": [round(x, 4) for x in losses],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
