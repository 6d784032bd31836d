"""Augmentation keeps shapes and ranges, really changes images, and is fixed by its seed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vitserve.models import augment


def digit_batch(n: int = 16) -> torch.Tensor:
    """White-on-black bars: (n, 1, 28, 28) in [0, 1], ink only in the centre."""
    ink = torch.zeros(n, 1, 28, 28)
    ink[:, :, 6:22, 12:16] = 1.0
    return ink


def test_shapes_ranges_and_change() -> None:
    ink = digit_batch()
    out = augment.augment(ink, augment.TRAIN, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 28, 28) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # Every image moved, was recoloured or was degraded: none equals its plain RGB copy.
    plain = ink.expand(-1, 3, -1, -1)
    per_image_change = (out - plain).abs().mean(dim=(1, 2, 3))
    assert bool((per_image_change > 0.01).all())


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    ink = digit_batch()
    a = augment.augment(ink, augment.TRAIN, torch.Generator().manual_seed(3))
    b = augment.augment(ink, augment.TRAIN, torch.Generator().manual_seed(3))
    c = augment.augment(ink, augment.TRAIN, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_polarity_paper_is_light_when_inverted_and_dark_otherwise() -> None:
    ink = digit_batch()
    inverted = replace(augment.PHOTO, p_invert=1.0)
    normal = replace(augment.PHOTO, p_invert=0.0)
    light = augment.augment(ink, inverted, torch.Generator().manual_seed(0))
    dark = augment.augment(ink, normal, torch.Generator().manual_seed(0))
    # The corner is paper in every image (the affine cannot move the bar that far).
    assert float(light[:, :, :3, :3].mean()) > 0.6
    assert float(dark[:, :, :3, :3].mean()) < 0.4


def test_identity_affine_leaves_ink_in_place() -> None:
    still = replace(augment.TRAIN, max_rotation_deg=0.0, max_shift_px=0.0, scale_range=(1.0, 1.0))
    ink = digit_batch(4)
    moved = augment.random_affine(ink, still, torch.Generator().manual_seed(0))
    torch.testing.assert_close(moved, ink, atol=1e-5, rtol=0)


def test_photo_like_gives_uint8_rgb_pixels_fixed_by_seed() -> None:
    images = (digit_batch(8)[:, 0] * 255).to(torch.uint8).numpy()
    a = augment.photo_like(images, seed=1)
    assert a.shape == (8, 28, 28, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, augment.photo_like(images, seed=1))
    # Colour: the three channels differ somewhere (a grayscale image would have them equal).
    assert (a[..., 0] != a[..., 1]).any()


def test_pixels_to_input_normalises_to_minus_one_one() -> None:
    pixels = np.zeros((1, 28, 28, 3), dtype=np.uint8)
    pixels[0, 0, 0] = 255
    x = augment.pixels_to_input(pixels)
    assert x.shape == (1, 3, 28, 28)
    assert float(x.min()) == -1.0 and float(x[0, :, 0, 0].min()) == 1.0
