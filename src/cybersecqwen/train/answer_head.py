"""The vocabulary projection of the answer positions only, on the CPU (issue 34).

TRL's SFT trainer replaces the model's LM head with a chunked log-probability function so the full logits are never
held. Where Triton runs (CUDA, XPU) it projects only the positions that carry a label; elsewhere it projects every
position and masks the result, because an accelerator compiler (Neuron) would recompile for each count of labelled
positions. Eager PyTorch on the CPU compiles nothing, and the corpus' answers are a small part of each example (a
letter, a CWE id, a vector after a long prompt), so there the projection of a 49,152-token vocabulary over every
prompt position was about 30% of a training step (profile in BENCHMARKS.md, "Issue 34, third session"). Scoring only
the labelled positions gives the same per-token log-probabilities, so the same loss, gradients and metrics.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_MARK = "_cybersecqwen_cpu_compact"


def project_answer_positions_only() -> bool:
    """Make TRL's fused LM head select the labelled positions on the CPU too. Returns whether it is in effect.

    TRL decides with `trl.trainer.utils._use_triton(device)` (pinned TRL 1.16.0; the name is private): only the
    fused forward of `trl/trainer/utils.py` reads it there, while the chunked kernel keeps its own copy and so still
    takes its plain-torch tiles on the CPU. A TRL without that name trains as before, with one warning.
    """
    try:
        from trl.trainer import utils
    except ImportError:  # pragma: no cover - trl is a dependency
        return False
    original = getattr(utils, "_use_triton", None)
    if original is None:
        log.warning("TRL has no trl.trainer.utils._use_triton: its fused LM head projects every position on the CPU")
        return False
    if getattr(original, _MARK, False):
        return True

    def compact(device) -> bool:
        return device.type == "cpu" or original(device)

    setattr(compact, _MARK, True)
    compact.original = original
    utils._use_triton = compact
    return True
