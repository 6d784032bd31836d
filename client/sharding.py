"""`--shard K/N`: which images one of N scorers owns, decided by the image's path alone.

The owner of an image is a hash of its path relative to the scored folder or prefix, so the partition
does not depend on listing order, page boundaries or what else is in the bucket: re-listing (after a
crash, on another machine, with new images added) gives every image the same owner, and the N
shards together cover every image exactly once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based, as Kubernetes' JOB_COMPLETION_INDEX): `Shard.parse("3/16")`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"a shard is K/N with 0 <= K < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, spec: str | Shard) -> Shard:
        """A Shard from "K/N"; ValueError naming the expected shape otherwise."""
        if isinstance(spec, Shard):
            return spec
        match = _SPEC.match(spec)
        if match is None:
            raise ValueError(f"a shard is K/N (for example 3/16), got {spec!r}")
        return cls(int(match[1]), int(match[2]))

    def owns(self, path: str) -> bool:
        """True when the image at `path` (relative, "/"-separated) is this shard's to score."""
        return self.count == 1 or shard_of(path, self.count) == self.index

    @property
    def name(self) -> str:
        """The folder this shard's results go to inside a results folder: `shard-00003-of-00016`."""
        return f"shard-{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL = Shard(0, 1)  # the whole input: what a run without --shard scores

_NAME = re.compile(r"^shard-(\d{5})-of-(\d{5})$")


def parse_shard_name(name: str) -> Shard | None:
    """The Shard a results sub-folder name stands for, or None if it is not one."""
    match = _NAME.match(name)
    return Shard(int(match[1]), int(match[2])) if match else None


def shard_of(path: str, count: int) -> int:
    """Which of `count` shards owns `path`: the first 8 bytes of its BLAKE2b digest, modulo count.

    Python's hash() is salted per process; a cryptographic digest is the same on every machine and
    Python version, and spreads similar names ("img_0001.png", "img_0002.png") evenly.
    """
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count
