"""softmax and top-k: numerically stable, ranked, tie-stable, capped, and strict about shapes."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from vitserve.runtime.predictions import Prediction, TopK, ranked_predictions, softmax, top_k_predictions

LABELS = ("cat", "dog", "fox", "owl", "yak")


def reference_softmax(row: list[float]) -> list[float]:
    """Textbook softmax on exactly representable inputs (small logits), for comparison."""
    exps = [np.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_softmax_matches_the_textbook_formula() -> None:
    logits = np.array([[0.0, 1.0, 2.0, -1.0, 0.5], [3.0, 3.0, 3.0, 3.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(softmax(logits), [reference_softmax(r) for r in logits.tolist()], rtol=1e-12)


@pytest.mark.parametrize("offset", [1e3, 1e5, -1e5])
def test_softmax_is_shift_invariant_for_huge_logits(offset: float) -> None:
    """exp(1000) overflows; the shifted softmax must not notice the offset at all."""
    small = np.array([[0.0, 1.0, 2.0, -1.0, 0.5]])
    probs = softmax(small + offset)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs, softmax(small), rtol=1e-9)
    np.testing.assert_allclose(probs, [reference_softmax(small[0].tolist())], rtol=1e-9)


def test_softmax_of_float32_extremes_is_finite() -> None:
    big = np.finfo(np.float32).max
    probs = softmax(np.array([[big, 0.0, -big], [-big, -big, -big]], dtype=np.float32))
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])


def test_softmax_keeps_tiny_probabilities_distinct() -> None:
    """In float64, p = exp(-100) survives; float32 would flush it and its neighbour to the same 0."""
    probs = softmax(np.array([[0.0, -100.0, -101.0]], dtype=np.float32))
    assert 0 < probs[0, 2] < probs[0, 1]
    assert probs.dtype == np.float64


def test_softmax_accepts_float16_and_leaves_its_input_alone() -> None:
    logits = np.array([[65504.0, 65000.0, 0.0]], dtype=np.float16)  # float16's largest values
    before = logits.copy()
    probs = softmax(logits)
    np.testing.assert_array_equal(logits, before)
    np.testing.assert_allclose(probs, [[1.0, 0.0, 0.0]], atol=1e-200)


def test_top_k_is_sorted_descending_with_matching_labels_and_indices() -> None:
    logits = np.array([[0.1, 2.0, -1.0, 1.5, 0.3], [5.0, -2.0, 0.0, 1.0, 4.0]], dtype=np.float32)
    preds = top_k_predictions(logits, LABELS, k=3)
    assert [[t.label for t in p.top_k] for p in preds] == [["dog", "owl", "yak"], ["cat", "yak", "owl"]]
    probs = softmax(logits)
    for row, pred in zip(probs, preds, strict=True):
        assert [t.index for t in pred.top_k] == list(np.argsort(-row)[:3])
        assert all(LABELS[t.index] == t.label for t in pred.top_k)
        assert [t.score for t in pred.top_k] == sorted((t.score for t in pred.top_k), reverse=True)
        np.testing.assert_allclose([t.score for t in pred.top_k], row[[t.index for t in pred.top_k]])
        assert (pred.label, pred.score) == (pred.top_k[0].label, pred.top_k[0].score)


def test_ties_rank_in_class_order() -> None:
    logits = np.array([[1.0, 3.0, 1.0, 3.0, 1.0]], dtype=np.float32)
    (pred,) = top_k_predictions(logits, LABELS, k=5)
    assert [t.index for t in pred.top_k] == [1, 3, 0, 2, 4]
    # The same input always ranks the same, whatever else is in the batch.
    batch = np.concatenate([logits, np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32), logits])
    preds = top_k_predictions(batch, LABELS, k=5)
    assert preds[0] == preds[-1] == pred


@pytest.mark.parametrize(("k", "expected"), [(1, 1), (3, 3), (5, 5), (6, 5), (1000, 5), (0, 1), (-3, 1)])
def test_k_is_capped_to_the_number_of_classes_and_at_least_one(k: int, expected: int) -> None:
    (pred,) = top_k_predictions(np.zeros((1, 5), dtype=np.float32), LABELS, k)
    assert len(pred.top_k) == expected


def test_all_k_scores_sum_to_one() -> None:
    logits = np.random.default_rng(1).normal(scale=4, size=(16, 5)).astype(np.float32)
    for pred in top_k_predictions(logits, LABELS, k=5):
        assert sum(t.score for t in pred.top_k) == pytest.approx(1.0, abs=1e-12)


def test_predictions_are_plain_python_values_ready_for_json() -> None:
    (pred,) = top_k_predictions(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=np.float32), LABELS, k=2)
    assert isinstance(pred, Prediction) and all(isinstance(t, TopK) for t in pred.top_k)
    assert type(pred.score) is float and all(
        type(t.index) is int and type(t.score) is float for t in pred.top_k
    )
    assert json.loads(json.dumps(asdict(pred)))["top_k"][0] == {
        "label": "yak",
        "index": 4,
        "score": pred.score,
    }


def test_empty_batch_gives_no_predictions() -> None:
    assert top_k_predictions(np.zeros((0, 5), dtype=np.float32), LABELS, k=3) == []


def test_input_logits_are_not_modified() -> None:
    logits = np.array([[1.0, 9.0, 3.0, 4.0, 5.0]], dtype=np.float32)
    before = logits.copy()
    top_k_predictions(logits, LABELS, k=5)
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize(
    "shape",
    [(1, 4), (1, 6), (5,), (1, 1, 5), (2, 5, 1)],
)
def test_logits_that_do_not_match_the_labels_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="do not match 5 labels"):
        top_k_predictions(np.zeros(shape, dtype=np.float32), LABELS, k=3)


def test_ranking_probabilities_is_top_k_of_their_logits() -> None:
    """The service ranks the model thread's probabilities (service/model/local.py) as offline code does."""
    logits = np.random.default_rng(1).normal(scale=4, size=(6, 5)).astype(np.float32)
    logits[2] = [1.0, 3.0, 1.0, 3.0, 1.0]  # ties too
    for k in (1, 3, 5, 9):
        assert ranked_predictions(softmax(logits), LABELS, k) == top_k_predictions(logits, LABELS, k)
    with pytest.raises(ValueError, match="do not match"):
        ranked_predictions(softmax(logits[:, :4]), LABELS, 3)
