"""Freezing the start-up heap takes what is alive out of the collector's walks and leaves the rest."""

from __future__ import annotations

import gc

from vitserve.service.bento.heap import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the garbage collector can free it


def test_what_lives_at_start_up_is_frozen_and_later_garbage_is_still_collected() -> None:
    try:
        startup = [Node() for _ in range(1000)]
        frozen = freeze_startup_heap("test")
        # Other tests' threads may still be winding down in this process and free a frozen object
        # meanwhile: the count can only fall after the freeze, never rise.
        assert frozen >= 1000 and gc.get_freeze_count() <= frozen
        assert not any(gc.is_tracked(n) and n in gc.get_objects(2) for n in startup[:3])
        # A request's cyclic garbage, made after the freeze, is collected as before.
        later = [Node() for _ in range(100)]
        del later
        assert gc.collect() >= 100
        assert gc.get_freeze_count() <= frozen  # nothing made after the freeze was frozen
    finally:
        gc.unfreeze()
