"""The fonts that print digits: installed by the project's extras; training and evaluation disjoint."""

from __future__ import annotations

import numpy as np
import pytest

from vitserve.models import fonts


def family(font: fonts.FontFile) -> str:
    return font.package if font.package != "matplotlib" else font.name.split("-")[0].rstrip("0123456789")


def test_training_and_evaluation_fonts_share_no_file_and_no_family() -> None:
    assert not set(fonts.TRAIN_FONTS) & set(fonts.EVAL_FONTS)
    assert not {f.package for f in fonts.TRAIN_FONTS} & {f.package for f in fonts.EVAL_FONTS}


def test_the_evaluation_prints_in_at_least_ten_families() -> None:
    assert len({f.package for f in fonts.EVAL_FONTS}) >= 10
    assert len({family(f) for f in fonts.TRAIN_FONTS}) >= 8


@pytest.mark.parametrize("font", fonts.TRAIN_FONTS + fonts.EVAL_FONTS, ids=lambda f: f.name)
def test_every_font_is_installed_and_draws_every_digit_tight(font: fonts.FontFile) -> None:
    for digit in range(10):
        ink = fonts.render_glyph(font, digit, size=40)
        assert ink.dtype == np.uint8 and ink.ndim == 2
        # Cropped tight: ink on every edge row and column, and a glyph of plausible height.
        assert ink[0].max() > 0 and ink[-1].max() > 0 and ink[:, 0].max() > 0 and ink[:, -1].max() > 0
        assert 15 <= ink.shape[0] <= 60


def test_a_missing_font_package_is_a_clear_error() -> None:
    with pytest.raises(fonts.FontError, match="not installed"):
        fonts.font_path(fonts.FontFile("no_such_font_package", "files/x.ttf"))
