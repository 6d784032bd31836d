"""Printed digits: the font files that draw them, and one glyph drawn as white ink on black.

Every font comes from a Python package that `vitserve[export]` installs (nothing is fetched at run
time). Training and the wild evaluation use disjoint font families, so the evaluation's printed
group measures how the model reads fonts it has never seen:

- training: the fonts matplotlib ships (DejaVu Sans, Sans Mono and Serif; STIX General; Computer
  Modern roman, bold, sans and typewriter) and two hand-drawn ones (Amatic SC, Intuitive);
- evaluation: ten families from the `font-*` packages (Roboto, Lato, Source Sans Pro, Source
  Serif Pro, Caladea, Hanken Grotesk, Manrope, Red Hat Display, Fredoka One, Fjalla One).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


class FontError(RuntimeError):
    """A font file the recipe needs is not installed."""


@dataclass(frozen=True)
class FontFile:
    package: str  # the importable package that holds the file
    path: str  # relative to the package's folder

    @property
    def name(self) -> str:
        return Path(self.path).stem


def _matplotlib(*names: str) -> tuple[FontFile, ...]:
    return tuple(FontFile("matplotlib", f"mpl-data/fonts/ttf/{name}.ttf") for name in names)


def _files(package: str, *names: str) -> tuple[FontFile, ...]:
    return tuple(FontFile(package, f"files/{name}") for name in names)


TRAIN_FONTS: tuple[FontFile, ...] = (
    *_matplotlib(
        "DejaVuSans",
        "DejaVuSans-Bold",
        "DejaVuSans-Oblique",
        "DejaVuSans-BoldOblique",
        "DejaVuSansMono",
        "DejaVuSansMono-Bold",
        "DejaVuSansMono-Oblique",
        "DejaVuSerif",
        "DejaVuSerif-Bold",
        "DejaVuSerif-Italic",
        "DejaVuSerif-BoldItalic",
        "STIXGeneral",
        "STIXGeneralBol",
        "STIXGeneralItalic",
        "STIXGeneralBolIta",
        "cmr10",
        "cmb10",
        "cmss10",
        "cmtt10",
    ),
    *_files("font_amatic_sc", "AmaticSC-Regular.ttf", "AmaticSC-Bold.ttf"),
    *_files("font_intuitive", "Intuitive.ttf"),
)

EVAL_FONTS: tuple[FontFile, ...] = (
    *_files("font_roboto", "Roboto-Regular.ttf", "Roboto-Bold.ttf", "Roboto-LightItalic.ttf"),
    *_files("font_lato", "Lato-Regular.ttf", "Lato-Black.ttf"),
    *_files("font_source_sans_pro", "SourceSansPro-Regular.ttf", "SourceSansPro-Semibold.ttf"),
    *_files("font_source_serif_pro", "SourceSerifPro-Regular.ttf", "SourceSerifPro-Bold.ttf"),
    *_files("font_caladea", "Caladea-Regular.ttf", "Caladea-Italic.ttf"),
    *_files("font_hanken_grotesk", "HankenGrotesk-Regular.otf", "HankenGrotesk-Bold.otf"),
    *_files("font_manrope", "Manrope-Regular.ttf", "Manrope-ExtraBold.ttf"),
    *_files("font_rhd", "RedHatDisplay-Regular.ttf", "RedHatDisplay-BoldItalic.ttf"),
    *_files("font_fredoka_one", "FredokaOne-Regular.ttf"),
    *_files("font_fjallaone", "FjallaOne-Regular.ttf"),
)


def font_path(font: FontFile) -> Path:
    """The installed file, or FontError naming the package to install."""
    spec = importlib.util.find_spec(font.package)
    if spec is None or spec.origin is None:
        raise FontError(f"font package {font.package!r} is not installed; pip install 'vitserve[export]'")
    path = Path(spec.origin).parent / font.path
    if not path.is_file():
        raise FontError(f"{font.package} has no {font.path}; pip install 'vitserve[export]'")
    return path


@functools.lru_cache(maxsize=256)
def _truetype(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size=size)


def render_glyph(font: FontFile, digit: int, size: int = 96) -> np.ndarray:
    """uint8 (h, w) white-on-black ink of one digit, cropped tight to its strokes."""
    face = _truetype(font_path(font), size)
    text = str(digit)
    left, top, right, bottom = face.getbbox(text)
    canvas = Image.new("L", (int(right - left) + 8, int(bottom - top) + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), text, fill=255, font=face)
    ink = np.asarray(canvas)
    rows, cols = np.flatnonzero(ink.max(axis=1)), np.flatnonzero(ink.max(axis=0))
    if rows.size == 0:
        raise FontError(f"{font.name} draws nothing for {text!r}")
    return np.ascontiguousarray(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
