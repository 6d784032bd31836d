"""`--shard K/N`: parsing, and a partition that depends on the path alone and never changes."""

from __future__ import annotations

from collections import Counter

import pytest

from vitserve.client import Shard
from vitserve.client.sharding import ALL, parse_shard_name, shard_of


def test_shards_parse_and_name_their_folders() -> None:
    assert Shard.parse("3/16") == Shard.parse(" 3 / 16 ") == Shard(3, 16)
    assert Shard(3, 16).name == "shard-00003-of-00016" and str(Shard(3, 16)) == "3/16"
    assert parse_shard_name("shard-00003-of-00016") == Shard(3, 16)
    assert parse_shard_name("parts") is None and Shard(0, 1) == ALL
    for bad in ["16/16", "-1/4", "1/0", "3", "a/b", "1/2/3"]:
        with pytest.raises(ValueError, match="K/N"):
            Shard.parse(bad)


def test_the_owner_of_a_path_is_pinned() -> None:
    """Results written by one version are resumed and merged by the next: changing the hash would
    send images to other shards, which would score them again. This test fails before that ships."""
    assert [shard_of(p, 16) for p in ["a.png", "d0/e1/00004.jpeg", "photos/cat.webp", "\udcff.png"]] == [
        6,
        5,
        14,
        4,
    ]
    assert [shard_of(f"img_{i:04d}.png", 4) for i in range(8)] == [1, 1, 2, 2, 3, 2, 0, 0]


def test_shards_cover_every_path_once_and_evenly() -> None:
    paths = [f"img_{i:06d}.png" for i in range(40_000)]
    shards = [Shard(k, 8) for k in range(8)]
    owners = [[shard for shard in shards if shard.owns(path)] for path in paths]
    assert all(len(found) == 1 for found in owners)
    sizes = Counter(found[0].index for found in owners)
    assert min(sizes.values()) > 0.95 * 5000 and max(sizes.values()) < 1.05 * 5000
    assert all(ALL.owns(path) for path in paths[:100])
