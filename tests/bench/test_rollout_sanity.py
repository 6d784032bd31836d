"""The rollout sanity figure's arithmetic on a hand-made map and image."""

from __future__ import annotations

import numpy as np
import pytest

from vitserve.bench.rollout_sanity import measure_maps, per_pixel_masses, stroke_patch_mass


def test_masses_per_pixel_by_hand() -> None:
    # A 2x2 map over a 4x4 image: each cell covers 4 pixels. The stroke is the top-left patch.
    heatmap = np.array([[0.4, 0.2], [0.2, 0.2]])
    image = np.zeros((4, 4), dtype=np.uint8)
    image[:2, :2] = 255
    inside, outside = per_pixel_masses(heatmap, image, threshold=127)
    assert inside == pytest.approx(0.4 / 4)  # 0.1 per stroke pixel
    assert outside == pytest.approx(0.6 / 12)  # 0.05 per background pixel


def test_a_map_that_does_not_tile_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="tile"):
        per_pixel_masses(np.ones((3, 3)) / 9, np.zeros((4, 4), dtype=np.uint8), threshold=127)
    with pytest.raises(ValueError, match="no stroke"):
        per_pixel_masses(np.ones((2, 2)) / 4, np.zeros((4, 4), dtype=np.uint8), threshold=127)


def test_stroke_patch_mass_by_hand() -> None:
    # Stroke pixels in the top-left and top-right patches (one pixel is enough to count a patch).
    heatmap = np.array([[0.4, 0.1], [0.3, 0.2]])
    image = np.zeros((4, 4), dtype=np.uint8)
    image[0, 0] = image[1, 3] = 255
    assert stroke_patch_mass(heatmap, image, threshold=127) == pytest.approx(0.5)
    assert stroke_patch_mass(heatmap * 2, image, threshold=127) == pytest.approx(0.5)  # a share of the total


def test_measure_maps_counts_wins_against_the_shuffled_control() -> None:
    image = np.zeros((4, 4), dtype=np.uint8)
    image[:2, :2] = 255
    on_stroke = np.array([[0.7, 0.1], [0.1, 0.1]])
    off_stroke = np.array([[0.1, 0.3], [0.3, 0.3]])
    result = measure_maps([on_stroke, off_stroke], np.stack([image, image]), "mean", threshold=127)
    assert result.digits == 2
    assert result.inside_wins == 0.5  # the first map favours the stroke, the second does not
    assert result.stroke_patches_win == 0.5
    assert result.median_stroke_patch_mass == pytest.approx((0.7 + 0.1) / 2)
