"""The fonts that print digits: installed by the project's extras; training and evaluation disjoint."""

from __future__ import annotations

import numpy as np
import pytest

from vitserve.models import fonts


def family(font: fonts.FontFile) -> str:
    """The family as a key: "Source Sans Pro" and "SourceSansPro" are one family."""
    return font.family.replace(" ", "").lower()


def test_training_and_evaluation_fonts_share_no_file_no_package_and_no_family() -> None:
    assert not {fonts.font_path(f) for f in fonts.TRAIN_FONTS} & {
        fonts.font_path(f) for f in fonts.EVAL_FONTS
    }
    assert not {f.package for f in fonts.TRAIN_FONTS} & {f.package for f in fonts.EVAL_FONTS}
    train, evaluation = {family(f) for f in fonts.TRAIN_FONTS}, {family(f) for f in fonts.EVAL_FONTS}
    assert not train & evaluation
    # Nor a relative that shares a family's name (Roboto Slab, Source Code Pro, Red Hat Text, ...).
    assert not any(e in t or t in e for t in train for e in evaluation)


def test_the_evaluation_prints_in_at_least_ten_families() -> None:
    assert len({family(f) for f in fonts.EVAL_FONTS}) >= 10
    assert len({family(f) for f in fonts.TRAIN_FONTS}) >= 8


def test_a_variable_font_draws_at_the_weight_asked() -> None:
    regular, bold = (f for f in fonts.TRAIN_FONTS if f.package == "fontpkg_work_sans")
    assert (regular.weight, bold.weight) == (400, 700) and regular.name != bold.name
    # The same outline at a heavier weight: more ink in a glyph of about the same height.
    thin, heavy = fonts.render_glyph(regular, 0, size=60), fonts.render_glyph(bold, 0, size=60)
    assert abs(thin.shape[0] - heavy.shape[0]) <= 2
    assert heavy.astype(float).sum() > 1.3 * thin.astype(float).sum()


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
        fonts.font_path(fonts.FontFile("no_such_font_package", "files/x.ttf", "None"))
