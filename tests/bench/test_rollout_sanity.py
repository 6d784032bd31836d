"""The rollout sanity figure's arithmetic on a hand-made map and image."""

from __future__ import annotations

import numpy as np
import pytest

from vitserve.bench.rollout_sanity import per_pixel_masses


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
