"""Attention rollout against hand-computed results on small row-stochastic matrices."""

from __future__ import annotations

import numpy as np
import pytest

from vitserve.runtime.rollout import RolloutError, class_token_map, fuse_heads, rollout, rollout_map


def layers(*matrices: list[list[float]]) -> np.ndarray:
    """One head per layer: (L, 1, T, T)."""
    return np.array(matrices, dtype=np.float64)[:, None]


def test_uniform_attention_one_layer_by_hand() -> None:
    # A = 1/2 everywhere; A + I = [[1.5, .5], [.5, 1.5]]; each row sums to 2.
    result = rollout(layers([[0.5, 0.5], [0.5, 0.5]]))
    np.testing.assert_allclose(result, [[0.75, 0.25], [0.25, 0.75]])


def test_uniform_attention_two_layers_gives_a_uniform_map() -> None:
    # T = 5 (class token + 2x2 patches). (A + I) / 2: 0.6 on the diagonal, 0.1 elsewhere.
    # Squared: diagonal 0.36 + 4 * 0.01 = 0.40, off-diagonal 2 * 0.06 + 3 * 0.01 = 0.15.
    uniform = np.full((5, 5), 0.2).tolist()
    result = rollout(layers(uniform, uniform))
    expected = np.full((5, 5), 0.15)
    np.fill_diagonal(expected, 0.40)
    np.testing.assert_allclose(result, expected)
    np.testing.assert_allclose(class_token_map(result), np.full((2, 2), 0.25))


def test_identity_attention_rolls_out_to_identity_and_has_no_map() -> None:
    eye = np.eye(5).tolist()
    result = rollout(layers(eye, eye, eye))
    np.testing.assert_allclose(result, np.eye(5))
    # The class token never looked at a patch: there is no map to draw, and that is an error.
    with pytest.raises(RolloutError, match="no weight"):
        class_token_map(result)


def test_two_layer_product_is_later_layer_times_earlier() -> None:
    # Layer 1: the class token attends only to token 1 -> normalised row [.5, .5, 0].
    # Layer 2: the class token attends only to token 2 -> normalised row [.5, 0, .5].
    # Rollout row 0 = .5 * [.5, .5, 0] + .5 * [0, 0, 1] = [.25, .25, .5] (A2 @ A1, not A1 @ A2,
    # which would give [.25, .5, .25]).
    first = [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    second = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    result = rollout(layers(first, second))
    np.testing.assert_allclose(result[0], [0.25, 0.25, 0.5])
    np.testing.assert_allclose(result[1:], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_head_fusions_by_hand() -> None:
    heads = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])  # (H=2, T, T)
    np.testing.assert_allclose(fuse_heads(heads, "mean"), [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(fuse_heads(heads, "max"), [[1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(fuse_heads(heads, "min"), [[0.0, 0.0], [0.0, 0.0]])
    # max: A + I = [[2, 1], [1, 2]], rows sum to 3. min: A + I = I.
    np.testing.assert_allclose(rollout(heads[None], "max"), [[2 / 3, 1 / 3], [1 / 3, 2 / 3]])
    np.testing.assert_allclose(rollout(heads[None], "min"), np.eye(2))


def test_rows_are_normalised_by_their_own_sums() -> None:
    heads = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.1, 0.9], [0.1, 0.9]]])
    # max = [[.9, .9], [.2, .9]]; + I = [[1.9, .9], [.2, 1.9]]; row sums 2.8 and 2.1. Dividing by
    # the sums without keepdims broadcasts them along the wrong axis: row 0 would become
    # [1.9 / 2.8, .9 / 2.1], which does not sum to 1.
    result = rollout(heads[None], "max")
    np.testing.assert_allclose(result, [[1.9 / 2.8, 0.9 / 2.8], [0.2 / 2.1, 1.9 / 2.1]])
    np.testing.assert_allclose(result.sum(axis=-1), [1.0, 1.0])


def test_map_of_random_attention_is_a_distribution_over_the_grid() -> None:
    rng = np.random.default_rng(0)
    # Digits-model shape: 4 layers, 4 heads, 49 patches + class token; Dirichlet rows are stochastic.
    attentions = rng.dirichlet(np.ones(50), size=(4, 4, 50))
    for fusion in ("mean", "max", "min"):
        rolled = rollout(attentions, fusion)
        np.testing.assert_allclose(rolled.sum(axis=-1), np.ones(50))
        heatmap = rollout_map(attentions, fusion)
        assert heatmap.shape == (7, 7)
        assert heatmap.min() >= 0
        assert heatmap.sum() == pytest.approx(1.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(RolloutError, match="layers, heads"):
        rollout(np.ones((2, 3, 3)))
    with pytest.raises(RolloutError, match="head_fusion"):
        rollout(np.ones((1, 1, 2, 2)) / 2, "median")
    with pytest.raises(RolloutError, match="NaN"):
        rollout(np.full((1, 1, 2, 2), np.nan))
    with pytest.raises(RolloutError, match="square"):
        class_token_map(np.full((3, 3), 1 / 3))
