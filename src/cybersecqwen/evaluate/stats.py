"""Confidence intervals and paired tests.

Every metric here is a function of summed per-item statistics, so a bootstrap replicate is a weighted sum:
draw item multiplicities once (multinomial), multiply by the per-item statistics matrix, apply the task's
metric function element-wise. Items, not responses, are resampled: with several trials per item the trials
move together (a cluster bootstrap), so the interval reflects the benchmark's finite size.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
from scipy import stats as scipy_stats

BOOTSTRAP_SAMPLES = 2000
CI_LEVEL = 0.95


def bootstrap_weights(n_items: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=samples).astype(float)


def bootstrap_ci(
    per_item: np.ndarray,
    keys: list[str],
    metric_fn: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    weights: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of every metric, from an [items x statistics] matrix."""
    if per_item.shape[0] < 2:
        return {}
    w = bootstrap_weights(per_item.shape[0]) if weights is None else weights
    totals = w @ per_item  # [samples x statistics]
    replicated = metric_fn({k: totals[:, j] for j, k in enumerate(keys)})
    alpha = (1 - CI_LEVEL) / 2
    out = {}
    for name, values in replicated.items():
        values = np.asarray(values, dtype=float)
        if values.ndim != 1:
            continue
        finite = values[np.isfinite(values)]
        if finite.size:
            out[name] = (float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
    return out


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on paired binary outcomes (two-sided binomial test on discordant pairs)."""
    a = a_correct.astype(bool)
    b = b_correct.astype(bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(scipy_stats.binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired continuous outcomes (1.0 when all equal)."""
    diff = a - b
    if np.allclose(diff, 0):
        return 1.0
    return float(scipy_stats.wilcoxon(a, b, zero_method="wilcox").pvalue)


def clean(value: Any) -> Any:
    """JSON-safe numbers: numpy scalars to float, nan to None."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
