"""Writes the digests of the training half's images, so the leakage check runs without the digits.

    python tools/mnist_train_digests.py

tests/models/test_mnist.py checks offline that no committed held-out digit's digest is among them, and,
where the digits can be fetched, that the shipped file is what this writes.
"""

from __future__ import annotations

from pathlib import Path

from vitserve.models import mnist

REPO = Path(__file__).resolve().parents[1]
TRAIN_DIGESTS = REPO / "tests" / "models" / "mnist_train_digests.txt"


def main() -> None:
    train = mnist.split(mnist.load_all(REPO / mnist.DEFAULT_CACHE)).train
    TRAIN_DIGESTS.write_text(mnist.digests_text(train))


if __name__ == "__main__":
    main()
