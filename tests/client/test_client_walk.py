"""Walking a folder: lazily, sorted per directory, hidden entries and other extensions skipped."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from vitserve.client.walk import count_images, iter_images, normalize_extensions


def test_walk_is_depth_first_sorted_and_filtered(tmp_path: Path, write_tree: Callable[..., Path]) -> None:
    write_tree(
        tmp_path,
        {
            "b.png": b"",
            "a.JPG": b"",
            "notes.txt": b"",
            "z/deep/er/x.webp": b"",
            "m/2.png": b"",
            "m/10.png": b"",
            ".hidden/skip.png": b"",
            "m/.skip.png": b"",
            "noext": b"",
        },
    )
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "m", tmp_path / "link-to-m")  # a directory symlink is not followed
    expected = ["a.JPG", "b.png", "m/10.png", "m/2.png", "z/deep/er/x.webp"]
    assert list(iter_images(tmp_path)) == expected
    assert list(iter_images(str(tmp_path), ["png"])) == ["b.png", "m/10.png", "m/2.png"]
    assert count_images(tmp_path) == 5


def test_walk_is_lazy(tmp_path: Path, write_tree: Callable[..., Path]) -> None:
    write_tree(tmp_path, {"a/1.png": b"", "b/1.png": b""})
    walk = iter_images(tmp_path)
    assert next(walk) == "a/1.png"
    (tmp_path / "b" / "0.png").write_bytes(b"")  # listed only when the walk gets there
    assert list(walk) == ["b/0.png", "b/1.png"]


def test_count_can_be_stopped(tmp_path: Path) -> None:
    (tmp_path / "1.png").write_bytes(b"")
    stop = threading.Event()
    stop.set()
    assert count_images(tmp_path, stop=stop) is None


def test_extensions_are_normalized() -> None:
    assert normalize_extensions(["PNG", ".jpg", "..webp"]) == {".png", ".jpg", ".webp"}
    with pytest.raises(ValueError, match="no file extensions"):
        normalize_extensions(["", "."])
