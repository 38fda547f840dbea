"""`cybersecqwen export plan`: predicted GGUF size and RAM per quantization, from a model's config alone.

Size follows llama.cpp's own choice of type per tensor: 1-D tensors stay F32; the output matrix (the token
embedding when tied) gets Q6_K in the K-quant and Q4_0 files; the "_M" mixes give attention-V and FFN-down
Q6_K in llama.cpp's `use_more_bits` layers; rows not a multiple of 256 fall back from K-quants to the nearest
legacy type (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0). RAM = weights (loaded, as our llama.cpp backend does: no
mmap) + the F16 KV cache at the context length + llama.cpp's compute buffer + a fixed runtime overhead. With the file
memory-mapped instead, RSS also shows the pages of every tensor llama.cpp repacks for its CPU kernels (most Q4_K
tensors): Qwen3-4B Q4_K_M at 4k, 5.09 GB mapped vs 3.34 GB loaded, predicted 3.20.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError

BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K": 5.5, "Q4_K": 4.5, "Q5_1": 6.0,
        "Q5_0": 5.5, "Q4_0": 4.5}
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
SCHEMES = {  # file type -> (base type, output type, more-bits type for attn_v/ffn_down)
    "F16": ("F16", "F16", None), "BF16": ("BF16", "BF16", None), "Q8_0": ("Q8_0", "Q8_0", None),
    "Q6_K": ("Q6_K", "Q6_K", None), "Q5_K_M": ("Q5_K", "Q6_K", "Q6_K"), "Q4_K_M": ("Q4_K", "Q6_K", "Q6_K"),
    "Q4_0": ("Q4_0", "Q6_K", None),
}
# Calibrated on the embedded model (BENCHMARKS.md): llama.cpp's allocations beyond weights, KV and compute.
RUNTIME_OVERHEAD = 30e6
BUDGETS_GB = (8, 12)
HEADROOM = 0.85  # leave 15% of the machine to the OS, the server and the analyst's other programs


@dataclass
class Shape:
    vocab: int
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qk_norm: bool

    @classmethod
    def from_config(cls, config: dict) -> "Shape":
        try:
            heads = config["num_attention_heads"]
            return cls(config["vocab_size"], config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
                       heads, config.get("num_key_value_heads", heads), config.get("head_dim") or config["hidden_size"] // heads,
                       bool(config.get("tie_word_embeddings", False)), config.get("model_type") == "qwen3")
        except KeyError as exc:
            raise CybersecqwenError(f"model config lacks {exc.args[0]}; pass a decoder model's config.json") from None


def load_shape(model: Path) -> Shape:
    path = model / "config.json" if model.is_dir() else model
    if not path.is_file():
        raise CybersecqwenError(f"{model}: no config.json; pass a model folder or its config.json")
    try:
        return Shape.from_config(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise CybersecqwenError(f"{path} is not valid JSON: {exc}") from None


def use_more_bits(layer: int, layers: int) -> bool:
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_type(kind: str, row: int, layer: int, shape: Shape, scheme: str) -> str:
    base, output, more = SCHEMES[scheme]
    chosen = base
    if kind == "output":
        chosen = output
    elif kind in ("attn_v", "ffn_down") and more and use_more_bits(layer, shape.layers):
        chosen = more
    if chosen in FALLBACK and row % 256:
        chosen = FALLBACK[chosen]
    return chosen


def matrices(shape: Shape):
    """(kind, layer, rows, row length) of every 2-D weight."""
    s = shape
    yield ("output" if s.tied else "token_embd", -1, s.vocab, s.hidden)
    if not s.tied:
        yield ("output", -1, s.vocab, s.hidden)
    for layer in range(s.layers):
        yield ("attn_q", layer, s.heads * s.head_dim, s.hidden)
        yield ("attn_k", layer, s.kv_heads * s.head_dim, s.hidden)
        yield ("attn_v", layer, s.kv_heads * s.head_dim, s.hidden)
        yield ("attn_output", layer, s.hidden, s.heads * s.head_dim)
        yield ("ffn_gate", layer, s.inter, s.hidden)
        yield ("ffn_up", layer, s.inter, s.hidden)
        yield ("ffn_down", layer, s.hidden, s.inter)


def file_bytes(shape: Shape, scheme: str) -> float:
    total = sum(rows * row * BITS[tensor_type(kind, row, layer, shape, scheme)] / 8 for kind, layer, rows, row in matrices(shape))
    norms = shape.layers * (2 * shape.hidden + (2 * shape.head_dim if shape.qk_norm else 0)) + shape.hidden
    metadata = shape.vocab * 30  # token strings, types and merges
    return total + norms * 4 + metadata


def kv_cache_bytes(shape: Shape, context: int) -> float:
    return 2 * shape.layers * context * shape.kv_heads * shape.head_dim * 2  # K and V, F16


def compute_bytes(shape: Shape, ubatch: int = 512) -> float:
    # One micro-batch's activations; llama.cpp's CPU path uses flash attention (no context x context scores)
    # and computes logits only for the positions that need them (measured: flat in the context length).
    return 4 * ubatch * (2 * shape.inter + 4 * shape.hidden) + 4 * shape.vocab * 8


def plan(shape: Shape, context: int = 4096) -> list[dict]:
    rows = []
    for scheme in SCHEMES:
        size = file_bytes(shape, scheme)
        ram = size + kv_cache_bytes(shape, context) + compute_bytes(shape) + RUNTIME_OVERHEAD
        rows.append({"quant": scheme, "file_gb": size / 1e9, "ram_gb": ram / 1e9, "context": context,
                     **{f"fits_{gb}gb": ram <= gb * 1e9 * HEADROOM for gb in BUDGETS_GB}})
    return rows


def markdown(rows: list[dict], model: str) -> str:
    lines = [f"Memory plan for {model} at a {rows[0]['context']}-token context (fits = RAM <= {HEADROOM:.0%} of the budget)", "",
             "| quant | file GB | RAM GB | fits 8 GB | fits 12 GB |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['quant']} | {r['file_gb']:.3f} | {r['ram_gb']:.3f} | {'yes' if r['fits_8gb'] else 'no'} | "
                     f"{'yes' if r['fits_12gb'] else 'no'} |")
    return "\n".join(lines) + "\n"
