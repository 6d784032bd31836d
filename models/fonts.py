"""Printed digits: the font files that draw them, and one glyph drawn as white ink on black.

Every font comes from a Python package that `vitserve[export]` installs (nothing is fetched at run
time). Training and the wild evaluation use disjoint font families, so the evaluation's printed
group measures how the model reads fonts it has never seen:

- training: the fonts matplotlib ships (DejaVu Sans, Sans Mono and Serif; STIX General; Computer
  Modern roman, bold, sans and typewriter), two hand-drawn ones (Amatic SC, Intuitive) and, from
  the `fontpkg-*` packages, fourteen families chosen for the shapes users print most: sans-serif
  faces whose "1" has a flag and no foot (Arimo, Barlow, DM Sans, Inter, Montserrat, Nunito, Open
  Sans, PT Sans, Public Sans, Work Sans), a condensed one (Oswald), a serif (PT Serif) and two
  handwriting faces (Kalam, Caveat);
- evaluation: ten families from the `font-*` packages (Roboto, Lato, Source Sans Pro, Source
  Serif Pro, Caladea, Hanken Grotesk, Manrope, Red Hat Display, Fredoka One, Fjalla One).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageFont


class FontError(RuntimeError):
    """A font file the recipe needs is not installed."""


@dataclass(frozen=True)
class FontFile:
    package: str  # the importable package that holds the file
    path: str  # relative to the package's folder
    family: str  # the typeface's family: training and evaluation never share one
    # For a variable font, the weight to draw at (its "wght" axis); None = the file's default.
    weight: int | None = None

    @property
    def name(self) -> str:
        stem = Path(self.path).stem.split("[")[0]
        return stem if self.weight is None else f"{stem}-w{self.weight}"


def _matplotlib(family: str, *names: str) -> tuple[FontFile, ...]:
    return tuple(FontFile("matplotlib", f"mpl-data/fonts/ttf/{name}.ttf", family) for name in names)


def _files(package: str, family: str, *names: str) -> tuple[FontFile, ...]:
    return tuple(FontFile(package, f"files/{name}", family) for name in names)


def _weights(package: str, family: str, name: str, *weights: int) -> tuple[FontFile, ...]:
    """One variable font file drawn at several weights."""
    return tuple(FontFile(package, f"files/{name}", family, weight) for weight in weights)


TRAIN_FONTS: tuple[FontFile, ...] = (
    *_matplotlib(
        "DejaVu Sans", "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique"
    ),
    *_matplotlib("DejaVu Sans Mono", "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique"),
    *_matplotlib(
        "DejaVu Serif", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic"
    ),
    *_matplotlib("STIX General", "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta"),
    *_matplotlib("Computer Modern", "cmr10", "cmb10", "cmss10", "cmtt10"),
    *_files("font_amatic_sc", "Amatic SC", "AmaticSC-Regular.ttf", "AmaticSC-Bold.ttf"),
    *_files("font_intuitive", "Intuitive", "Intuitive.ttf"),
    *_weights("fontpkg_arimo", "Arimo", "Arimo[wght].ttf", 400, 700),
    *_weights("fontpkg_arimo", "Arimo", "Arimo-Italic[wght].ttf", 400),
    *_files("fontpkg_barlow", "Barlow", "Barlow-Light.ttf", "Barlow-Regular.ttf", "Barlow-Bold.ttf"),
    *_weights("fontpkg_dm_sans", "DM Sans", "DMSans[opsz,wght].ttf", 400, 700),
    *_weights("fontpkg_inter", "Inter", "Inter[opsz,wght].ttf", 300, 400, 700),
    *_weights("fontpkg_inter", "Inter", "Inter-Italic[opsz,wght].ttf", 400),
    *_weights("fontpkg_montserrat", "Montserrat", "Montserrat[wght].ttf", 400, 800),
    *_weights("fontpkg_nunito", "Nunito", "Nunito[wght].ttf", 400, 800),
    *_weights("fontpkg_open_sans", "Open Sans", "OpenSans[wdth,wght].ttf", 400, 700),
    *_weights("fontpkg_open_sans", "Open Sans", "OpenSans-Italic[wdth,wght].ttf", 400),
    *_files("fontpkg_pt_sans", "PT Sans", "PT_Sans-Web-Regular.ttf", "PT_Sans-Web-Bold.ttf"),
    *_weights("fontpkg_public_sans", "Public Sans", "PublicSans[wght].ttf", 300, 600),
    *_weights("fontpkg_work_sans", "Work Sans", "WorkSans[wght].ttf", 400, 700),
    *_weights("fontpkg_oswald", "Oswald", "Oswald[wght].ttf", 400),
    *_files("fontpkg_pt_serif", "PT Serif", "PT_Serif-Web-Regular.ttf", "PT_Serif-Web-Italic.ttf"),
    *_files("fontpkg_kalam", "Kalam", "Kalam-Regular.ttf", "Kalam-Bold.ttf"),
    *_weights("fontpkg_caveat", "Caveat", "Caveat[wght].ttf", 400, 700),
)

EVAL_FONTS: tuple[FontFile, ...] = (
    *_files("font_roboto", "Roboto", "Roboto-Regular.ttf", "Roboto-Bold.ttf", "Roboto-LightItalic.ttf"),
    *_files("font_lato", "Lato", "Lato-Regular.ttf", "Lato-Black.ttf"),
    *_files(
        "font_source_sans_pro", "Source Sans Pro", "SourceSansPro-Regular.ttf", "SourceSansPro-Semibold.ttf"
    ),
    *_files(
        "font_source_serif_pro", "Source Serif Pro", "SourceSerifPro-Regular.ttf", "SourceSerifPro-Bold.ttf"
    ),
    *_files("font_caladea", "Caladea", "Caladea-Regular.ttf", "Caladea-Italic.ttf"),
    *_files("font_hanken_grotesk", "Hanken Grotesk", "HankenGrotesk-Regular.otf", "HankenGrotesk-Bold.otf"),
    *_files("font_manrope", "Manrope", "Manrope-Regular.ttf", "Manrope-ExtraBold.ttf"),
    *_files("font_rhd", "Red Hat Display", "RedHatDisplay-Regular.ttf", "RedHatDisplay-BoldItalic.ttf"),
    *_files("font_fredoka_one", "Fredoka One", "FredokaOne-Regular.ttf"),
    *_files("font_fjallaone", "Fjalla One", "FjallaOne-Regular.ttf"),
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
def _truetype(path: Path, size: int, weight: int | None) -> ImageFont.FreeTypeFont:
    face = ImageFont.truetype(str(path), size=size)
    if weight is not None:
        # Every other axis (optical size, width) at its default; the weight as asked.
        axes = face.get_variation_axes()
        # Pillow's stubs allow a None default; a variable font's axes always carry one.
        values = [
            float(weight) if axis["name"] == b"Weight" else cast(float, axis["default"]) for axis in axes
        ]
        face.set_variation_by_axes(values)
    return face


def render_glyph(font: FontFile, digit: int, size: int = 96) -> np.ndarray:
    """uint8 (h, w) white-on-black ink of one digit, cropped tight to its strokes."""
    face = _truetype(font_path(font), size, font.weight)
    text = str(digit)
    left, top, right, bottom = face.getbbox(text)
    canvas = Image.new("L", (int(right - left) + 8, int(bottom - top) + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), text, fill=255, font=face)
    ink = np.asarray(canvas)
    rows, cols = np.flatnonzero(ink.max(axis=1)), np.flatnonzero(ink.max(axis=0))
    if rows.size == 0:
        raise FontError(f"{font.name} draws nothing for {text!r}")
    return np.ascontiguousarray(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
