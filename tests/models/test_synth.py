"""Training synthesis: photos of digits, fixed by the seed, prepared as the service prepares uploads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from vitserve.models import synth
from vitserve.models.mnist import Digits
from vitserve.models.train import PREPROCESSING

HELDOUT = Path(__file__).resolve().parents[2] / "models" / "digits-vit" / "heldout.npz"


def test_same_seed_same_digits_other_seed_other_digits() -> None:
    digits = Digits.load(HELDOUT).subset(np.arange(50))
    inks = list(digits.images)
    a = synth.synthesise(inks, digits.labels, 30, PREPROCESSING, seed=5, photo=True)
    b = synth.synthesise(inks, digits.labels, 30, PREPROCESSING, seed=5, photo=True)
    c = synth.synthesise(inks, digits.labels, 30, PREPROCESSING, seed=6, photo=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    images, labels = a
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64


def test_photos_vary_and_come_back_white_on_black() -> None:
    digits = Digits.load(HELDOUT).subset(np.arange(20))
    rng = np.random.default_rng(0)
    photos = [synth.photograph(image, rng) for image in digits.images]
    # Both polarities and more than one size of frame.
    papers = [np.asarray(p.convert("L"))[0, 0] for p in photos]
    assert min(papers) < 100 < max(papers)
    assert len({p.size for p in photos}) > 5
    prepared = np.stack([synth.prepared(p, PREPROCESSING) for p in photos])
    # After normalisation the digits are light on a black frame, whatever their photos looked like
    # (a tiny digit lost in heavy noise may come back blank: the synthesiser does draw some of those).
    assert prepared[:, :2].max() < 60
    assert (prepared.reshape(20, -1).max(axis=1) > 128).sum() >= 17


def test_every_training_font_draws_every_digit() -> None:
    glyphs, labels = synth.font_glyphs(size=32)
    assert len(glyphs) == len(labels) and sorted(set(labels.tolist())) == list(range(10))


def test_some_low_resolution_scans_come_back_enlarged_by_a_whole_factor() -> None:
    digits = Digits.load(HELDOUT).subset(np.arange(12))
    for n, image in enumerate(digits.images):
        sizes = []
        for p_blocky in (0.0, 1.0):
            rng = np.random.default_rng(n)
            config = replace(synth.PHOTO, p_blocky=p_blocky)
            rgb = synth.colour_and_light(synth.place(image, False, rng, config), rng, config)
            sizes.append(synth.degrade(rgb, True, rng, config).size)
        (w, h), (big_w, big_h) = sizes
        # The same 10-28 px scan, then enlarged 2-5x by nearest neighbour.
        assert 10 <= min(w, h) <= 28
        assert big_w % w == 0 and big_w // w in range(2, 6) and big_h == h * (big_w // w)
