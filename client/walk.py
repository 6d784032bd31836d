"""Finding the images under a folder: lazily, in a deterministic order, as relative POSIX paths."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

# What `vitserve score` picks up unless told otherwise: the formats the server decodes.
DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def normalize_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """{".png", ...} from "png", ".PNG", ...; raises ValueError when none is given."""
    normalized = frozenset("." + ext.lower().lstrip(".") for ext in extensions if ext.strip("."))
    if not normalized:
        raise ValueError("no file extensions given")
    return normalized


def iter_images(root: str | Path, extensions: Iterable[str] = DEFAULT_EXTENSIONS) -> Iterator[str]:
    """Relative paths ("a/b.png") of the files under `root` with one of `extensions`.

    Depth first, each directory's entries sorted by name, so two walks of the same tree agree; only
    one directory listing is held at a time, so a tree of any size walks in flat memory. Hidden
    entries (".git", ".DS_Store") are skipped and directory symlinks are not followed (no cycles).
    An unreadable directory raises its OSError: silently scoring part of a tree would be worse.
    """
    wanted = normalize_extensions(extensions)
    yield from _walk(os.fspath(root), "", wanted)


def count_images(
    root: str | Path, extensions: Iterable[str] = DEFAULT_EXTENSIONS, stop: threading.Event | None = None
) -> int | None:
    """How many paths iter_images would yield; None if `stop` was set before the count finished."""
    count = 0
    for _ in iter_images(root, extensions):
        if stop is not None and stop.is_set():
            return None
        count += 1
    return count


def _walk(directory: str, prefix: str, wanted: frozenset[str]) -> Iterator[str]:
    with os.scandir(directory) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, f"{prefix}{entry.name}/", wanted)
        elif os.path.splitext(entry.name)[1].lower() in wanted and entry.is_file():
            yield prefix + entry.name
