"""Logits -> ranked predictions: a numerically stable softmax and top-k, outside any service class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TopK:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    top_k: tuple[TopK, ...]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, in float64 so that tiny scores do not round to 0 unevenly."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k_predictions(logits: np.ndarray, labels: tuple[str, ...], k: int) -> list[Prediction]:
    """One Prediction per row of (N, C) logits, with the k most likely classes in descending order."""
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise ValueError(f"logits of shape {logits.shape} do not match {len(labels)} labels")
    k = max(1, min(k, len(labels)))
    probs = softmax(logits)
    # Stable sort on -p keeps ties in class order, so identical inputs always rank identically.
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    predictions = []
    for row, indices in zip(probs, order, strict=True):
        ranked = tuple(TopK(labels[i], int(i), float(row[i])) for i in indices)
        predictions.append(Prediction(label=ranked[0].label, score=ranked[0].score, top_k=ranked))
    return predictions
