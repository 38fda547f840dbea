"""LoRA's input dropout with a cheaper random source, for CPU training (issue 34).

PEFT applies `nn.Dropout(lora.dropout)` to the input of every adapted linear layer: 7 per decoder layer, so 210
masks per forward of the embedded model. On the CPU, `torch.nn.functional.dropout` draws each element with
`bernoulli_`, and that alone was 12% of a training step (profile in BENCHMARKS.md, "Issue 34, third session"). Here
one 64-bit draw gives four elements 15 random bits each, and an element is kept when its bits are at or above
`round(p * 2**15)`: dropout with probability `round(p * 2**15) / 2**15` (0.05 -> 0.049988), kept elements scaled by
the inverse of the exact keep probability, so the expectation of each input is unchanged, as with `nn.Dropout`.
"""

from __future__ import annotations

import torch

_LEVELS = 1 << 15


class FastDropout(torch.nn.Module):
    """Inverted dropout drawing 15-bit uniforms four to a 64-bit random word."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.threshold = round(p * _LEVELS)
        self.p = self.threshold / _LEVELS  # the probability it applies
        self.scale = 1.0 / (1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_()
        # random_() fills [0, 2**63 - 1]: every 16-bit quarter's low 15 bits are uniform (the top one's sign is not).
        bits = words.view(torch.int16)[: x.numel()].view(x.shape) & (_LEVELS - 1)
        mask = (bits >= self.threshold).to(x.dtype).mul_(self.scale)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p:.6f}"


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Replace PEFT's LoRA dropout modules by FastDropout of the same probability. Returns how many."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                dropouts[name] = FastDropout(dropout.p)
                replaced += 1
    return replaced
