"""Fusion of the answerers: each candidate's features (the head's log-probability, the language model's
log-probability normalised over the candidates, the lexical similarity to the catalog entry) are weighted into one
score, and a softmax over the candidates gives the fused confidence. The weights are learned on validation items by
maximising the log-likelihood of the right candidate (a conditional logit, i.e. a small multinomial logistic
regression), so a useless answerer gets a weight near 0 and a reliable one dominates.

Multi-label jobs (ATT&CK: a text shows several techniques) are not a choice among candidates: each candidate is its
own yes/no question. There the head's feature is the logit of its per-label probability and the fused probability of
each candidate is a logistic model on the features plus a bias (weights learned on validation items by binary
log-likelihood), so several candidates can be likely at once and weights (1, 0, 0, bias 0) give the head's own
probability back exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import minimize

FEATURES = ("head", "model", "lexical")
# ATT&CK adds the knowledge index's support: how closely the text's sentences match the technique's own descriptions
# and procedure examples in the catalog (heads/knowledge.py technique_support).
# Then the sentence classifier: each technique's probability in the text's likeliest sentence (heads/train.py
# train_sentence_head), as a logit like the head's.
ATTACK_FEATURES = FEATURES + ("knowledge", "sentences")
FLOOR = np.log(1e-6)  # the log-probability of a candidate an answerer did not rank at all
FORMAT = 4  # of fusion.json: 4 = ATT&CK has the sentence feature; 3 = the knowledge feature; 2 = multi-label per label; 1 = one softmax


def logit(probability: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(probability, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max()
    return shifted - np.log(np.exp(shifted).sum())


def fused_probabilities(features: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """features: candidates x FEATURES -> probabilities over the candidates."""
    return np.exp(log_softmax(features @ np.asarray(weights, dtype=float)))


def label_probabilities(features: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Multi-label: features (candidates x FEATURES) and weights (one per feature, then the bias) -> each candidate's
    own probability of being right."""
    w = np.asarray(weights, dtype=float)
    return sigmoid(features @ w[:-1] + w[-1])


def learn_label_weights(items: Sequence[tuple[np.ndarray, np.ndarray]], l2: float = 1e-3) -> np.ndarray:
    """Multi-label weights (one per feature, then the bias) maximising the binary log-likelihood of every candidate of
    every validation item [(features, 0/1 per candidate)]. Feature weights are kept >= 0 (an answerer can be ignored,
    never inverted); the bias is free and not penalised."""
    rows = [(x, np.asarray(y, dtype=float)) for x, y in items if len(x)]
    if not rows:
        return np.zeros(len(FEATURES) + 1)
    x = np.vstack([np.hstack([m, np.ones((len(m), 1))]) for m, _ in rows])
    y = np.concatenate([t for _, t in rows])
    penalty = np.r_[np.ones(x.shape[1] - 1), 0.0]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        # -log sigmoid(z) for positives, -log sigmoid(-z) for negatives, written stably
        total = np.mean(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y))
        grad = x.T @ (sigmoid(z) - y) / len(y)
        return total + l2 * (penalty * w) @ w, grad + 2 * l2 * penalty * w

    bounds = [(0, None)] * (x.shape[1] - 1) + [(None, None)]
    return minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds).x


def learn_weights(items: Sequence[tuple[np.ndarray, int]], l2: float = 1e-3) -> np.ndarray:
    """Weights maximising sum log P(gold) over validation items [(features, index of the right candidate)]; the
    small L2 term keeps a feature that never helps at ~0. Items whose right answer is not a candidate are skipped."""
    usable = [(x, g) for x, g in items if 0 <= g < len(x)]
    if not usable:
        return np.zeros(len(FEATURES))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = 0.0, np.zeros_like(w)
        for x, gold in usable:
            p = np.exp(log_softmax(x @ w))
            total -= np.log(p[gold] + 1e-300)
            grad -= x[gold] - p @ x
        n = len(usable)
        return total / n + l2 * w @ w, grad / n + 2 * l2 * w

    width = usable[0][0].shape[1]
    result = minimize(loss, np.zeros(width), jac=True, method="L-BFGS-B", bounds=[(0, None)] * width)
    return result.x


def review_threshold(confidence: np.ndarray, correct: np.ndarray, target: float = 0.9) -> dict[str, float | None]:
    """The lowest confidence at or above which answers are right >= target of the time on validation."""
    for threshold in np.linspace(0.0, 0.99, 100):
        kept = confidence >= threshold
        if kept.any() and correct[kept].mean() >= target:
            return {"review_below": round(float(threshold), 2), "unflagged_precision": round(float(correct[kept].mean()), 4),
                    "flagged_share": round(float(1 - kept.mean()), 4)}
    return {"review_below": 1.0, "unflagged_precision": None, "flagged_share": 1.0}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return float(total)
