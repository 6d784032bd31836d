"""Heatmap rendering: the colour scale's ends, the overlay's size, and where the hot spot lands."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vitserve.service.flow.heatmap import INFERNO_ANCHORS, colormap, overlay, overlay_png, scale_for_display


def test_colormap_ends_and_clipping() -> None:
    colours = colormap(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]))
    assert colours.dtype == np.uint8 and colours.shape == (6, 3)
    np.testing.assert_array_equal(colours[1], INFERNO_ANCHORS[0])
    np.testing.assert_array_equal(colours[3], INFERNO_ANCHORS[-1])
    np.testing.assert_array_equal(colours[2], INFERNO_ANCHORS[3])  # 0.5 is the middle anchor
    np.testing.assert_array_equal(colours[0], colours[1])  # below 0 and NaN clip to the bottom
    np.testing.assert_array_equal(colours[5], colours[1])
    np.testing.assert_array_equal(colours[4], colours[3])


def test_display_scale_is_relative_to_the_hottest_cell() -> None:
    np.testing.assert_allclose(
        scale_for_display(np.array([[0.1, 0.3], [0.2, 0.4]])), [[0.25, 0.75], [0.5, 1]]
    )
    np.testing.assert_array_equal(scale_for_display(np.zeros((2, 2))), np.zeros((2, 2)))


def test_overlay_is_upscaled_and_hot_where_the_map_is() -> None:
    pixels = np.zeros((28, 28, 3), dtype=np.uint8)
    heatmap = np.zeros((7, 7))
    heatmap[0, 6] = 1.0  # the top-right patch takes all the mass
    image = overlay(pixels, heatmap)
    assert image.size == (224, 224) and image.mode == "RGB"
    array = np.asarray(image, dtype=np.int64)
    assert array[10, 214].sum() > array[214, 10].sum() + 100  # top-right bright, bottom-left dark
    decoded = Image.open(io.BytesIO(overlay_png(pixels, heatmap)))
    assert decoded.format == "PNG" and decoded.size == (224, 224)


def test_large_inputs_keep_their_size_and_bad_shapes_are_refused() -> None:
    assert overlay(np.zeros((300, 300, 3), np.uint8), np.ones((14, 14)) / 196).size == (300, 300)
    with pytest.raises(ValueError, match="uint8"):
        overlay(np.zeros((28, 28), np.uint8), np.ones((7, 7)))
    with pytest.raises(ValueError, match="2-D"):
        overlay(np.zeros((28, 28, 3), np.uint8), np.ones(49))
