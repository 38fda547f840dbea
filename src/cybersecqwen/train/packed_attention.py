"""Attention per example inside one packed row: the CPU (and GPU-without-FlashAttention) path of `train.attention:
packed`.

A padding-free batch concatenates a step's examples into one row whose position ids restart at 0 for each example.
transformers' SDPA path turns that into a row x row block-diagonal mask: every masked pair is still computed, and the
mask and the attention weights are kept for backward (the 1.45x slowdown and 4.8 GB measured for a 4,096-token row,
BENCHMARKS.md). Here the row's linear layers still see all its tokens at once (the matmuls get more rows), but
attention runs once per example with the causal kernel, so it costs only the real pairs and nothing row-squared is
kept. Examples never attend to each other. With a KV cache, a padded batch (a 2D mask) or no position ids, it is
plain SDPA.
"""

from __future__ import annotations

import torch

NAME = "cybersecqwen_packed_sdpa"


def example_bounds(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each example in a one-row packed batch: a new example starts where the position drops."""
    positions = position_ids.reshape(-1)
    starts = [0] + (torch.nonzero(positions[1:] <= positions[:-1]).flatten() + 1).tolist()
    return list(zip(starts, starts[1:] + [positions.numel()]))


def packed_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """transformers' attention-function signature: query/key/value are (batch, heads, tokens, dim); the result is
    (batch, tokens, heads, dim) and no attention weights."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.pop("position_ids", None)
    starts = kwargs.get("cu_seq_lens_q")  # the padding-free collator's example bounds, when it gave them
    kwargs.pop("is_causal", None)
    packed = (position_ids is not None and attention_mask is None and query.shape[0] == 1
              and query.shape[2] == key.shape[2] == position_ids.shape[-1])
    if not packed:
        bounds = []
    elif starts is not None and int(starts[-1]) == query.shape[2]:
        edges = starts.tolist()
        bounds = list(zip(edges, edges[1:]))
    else:
        bounds = example_bounds(position_ids)
    if len(bounds) <= 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=attention_mask is None and query.shape[2] > 1, **kwargs)
    parts = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, dropout=dropout,
                                    scaling=scaling, is_causal=True, **kwargs)[0] for a, b in bounds]
    return torch.cat(parts, dim=1), None


def register() -> str:
    """Make the function known to transformers under NAME (idempotent); returns the name for attn_implementation.

    No mask function is registered under the name, so transformers builds no mask for it (attention_mask is None)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_sdpa)
    return NAME
