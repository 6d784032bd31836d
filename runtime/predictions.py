"""Logits -> ranked predictions: a numerically stable softmax and top-k, outside any service class.

The service splits the two: `softmax` runs once per batch in the model's thread (service/model/local.py),
and `ranked_predictions` runs per request on the event loop in plain Python. NumPy's calls release
the GIL, and on a loaded worker the loop then waited for a decode thread to hand it back: per-request
softmax and argsort were a large share of the event loop's busy time (docs/benchmarks.md, "Where the
time goes").
"""

from __future__ import annotations

import heapq
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
    return ranked_predictions(softmax(logits), labels, k)


def ranked_predictions(probs: np.ndarray, labels: tuple[str, ...], k: int) -> list[Prediction]:
    """One Prediction per row of (N, C) probabilities (`softmax`'s), the k most likely first."""
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"scores of shape {probs.shape} do not match {len(labels)} labels")
    k = max(1, min(k, len(labels)))
    classes = range(len(labels))
    predictions = []
    for row in probs.tolist():
        # nlargest is sorted(..., reverse=True)[:k], which is stable: ties keep class order, so
        # identical inputs always rank identically.
        ranked = tuple(TopK(labels[i], i, row[i]) for i in heapq.nlargest(k, classes, key=row.__getitem__))
        predictions.append(Prediction(label=ranked[0].label, score=ranked[0].score, top_k=ranked))
    return predictions
