"""Where images come from and results go: local folders, or object storage through fsspec.

A location is a URL when it has a scheme (`s3://bucket/prefix`, `gs://…`, `az://…`, `file://…`);
anything else is a local path and needs nothing beyond the standard library. URLs go through fsspec
and its maintained back-ends (s3fs, gcsfs, adlfs: the `vitserve[s3]`, `[gcs]`, `[azure]` extras).
Credentials and endpoints come from each back-end's standard chain (AWS_* variables, profiles and
instance roles; Google's application default credentials; AZURE_STORAGE_* variables or
DefaultAzureCredential), or from fsspec's own configuration (FSSPEC_S3_* variables, ~/.config/fsspec),
never from a vitserve flag: a command line ends up in shell history and process listings.

`ObjectStore` is the little the results folder needs: list, read, create exclusively, overwrite.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, TypeVar

from vitserve.client.errors import StorageError

T = TypeVar("T")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Which extra brings each back-end; fsspec's own message names the pip package, not our extra.
EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for `scheme://...` (object storage or file://), False for a plain local path."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def filesystem(url: str) -> tuple[Any, str]:
    """fsspec's file system for `url` and the path inside it (bucket/key, without the scheme)."""
    try:
        import fsspec.core
    except ImportError as exc:
        raise ValueError(_missing_extra(url)) from exc
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # fsspec raises ValueError for unknown protocols
        raise ValueError(f"{_missing_extra(url)} ({exc})") from exc
    return fs, str(path).rstrip("/")


def _missing_extra(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    extra = EXTRAS.get(scheme)
    if extra is None:
        return f"no storage back-end for {scheme}:// URLs (fsspec knows the protocols it supports)"
    return f"{scheme}:// URLs need the {extra} extra: pip install 'vitserve[{extra}]'"


def translate(exc: OSError, doing: str) -> OSError | StorageError:
    """A back-end failure as raised to the caller: StorageError (rerun to resume) for trouble that
    may pass (network, throttling, 5xx after the back-end's retries); a missing bucket or a denied
    request stays the OSError it is, since rerunning cannot fix it."""
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return exc
    error = StorageError(f"{doing}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class ObjectStore(Protocol):
    """Whole objects under one folder, addressed by "/"-separated keys relative to it."""

    location: str

    def keys(self, prefix: str) -> list[str]:
        """Keys directly under `prefix` (a "folder/"), sorted; [] when there is none."""
        ...

    def folders(self) -> list[str]:
        """Names of the sub-folders, sorted."""
        ...

    def read(self, key: str) -> bytes: ...

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` whole if it does not exist yet, atomically; False (nothing written) if it did."""
        ...

    def replace(self, key: str, data: bytes) -> None:
        """Write `key` whole, replacing what was there, atomically."""
        ...

    def sub(self, folder: str) -> ObjectStore:
        """The store for a sub-folder."""
        ...


class LocalStore:
    """An ObjectStore on a local (or network) file system; atomic by link/rename of a synced file."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def keys(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        return sorted(prefix + p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def folders(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def create(self, key: str, data: bytes) -> bool:
        target = self.root / key
        temporary = self._synced_temporary(target, data)
        try:
            os.link(temporary, target)  # fails if target exists: the exclusive, all-or-nothing step
        except FileExistsError:
            return False
        finally:
            temporary.unlink()
        fsync_directory(target.parent)
        return True

    def replace(self, key: str, data: bytes) -> None:
        target = self.root / key
        os.replace(self._synced_temporary(target, data), target)
        fsync_directory(target.parent)

    def sub(self, folder: str) -> LocalStore:
        return LocalStore(self.root / folder)

    def _synced_temporary(self, target: Path, data: bytes) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            write_synced(fd, data)
        finally:
            os.close(fd)
        return Path(name)


class FsspecStore:
    """An ObjectStore on object storage: each object is written by one PUT (all or nothing), and
    `create` is the back-end's conditional write (S3 If-None-Match, GCS ifGenerationMatch=0, Azure
    If-None-Match), so that two writers can never both create the same key."""

    def __init__(self, fs: Any, root: str, location: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.location = location.rstrip("/")

    def keys(self, prefix: str) -> list[str]:
        try:
            found = self.fs.ls(self._path(prefix), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise translate(exc, f"listing {self.location}/{prefix}") from exc
        names = (entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in found if entry["type"] == "file")
        return sorted(prefix + name for name in names)

    def folders(self) -> list[str]:
        try:
            found = self.fs.ls(self.root, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise translate(exc, f"listing {self.location}") from exc
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in found if e["type"] == "directory")

    def read(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except OSError as exc:
            raise translate(exc, f"reading {self.location}/{key}") from exc

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            raise translate(exc, f"writing {self.location}/{key}") from exc
        return True

    def replace(self, key: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._path(key), data)
        except OSError as exc:
            raise translate(exc, f"writing {self.location}/{key}") from exc

    def sub(self, folder: str) -> FsspecStore:
        folder = folder.strip("/")
        return FsspecStore(self.fs, f"{self.root}/{folder}", f"{self.location}/{folder}")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}".rstrip("/")


def open_store(location: str | os.PathLike[str]) -> ObjectStore:
    """The ObjectStore for a folder: local for a path or file:// URL, fsspec's back-end otherwise."""
    if not is_url(location):
        return LocalStore(location)
    url = str(location)
    if url.startswith("file://"):
        return LocalStore(url.removeprefix("file://"))
    fs, root = filesystem(url)
    return FsspecStore(fs, root, url)


def write_synced(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, then fsync it."""
    view = memoryview(data)
    while view:  # a regular file takes it in one call; the loop covers signals and quotas
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def fsync_directory(directory: Path) -> None:
    """Make a file's creation or rename in `directory` survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LoopBridge:
    """Runs coroutines of an fsspec back-end on the back-end's own event loop (fsspec keeps one in
    a thread for all its I/O) and awaits them from ours, so our cancellation never strands its
    connections and our loop never blocks on its I/O."""

    def __init__(self, fs: Any) -> None:
        self.loop: asyncio.AbstractEventLoop = fs.loop

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await asyncio.wrap_future(future)

    async def iterate(self, pages: AsyncIterator[T]) -> AsyncIterator[T]:
        """Pull an async iterator that lives on the back-end's loop, one item (a page) at a time."""
        while True:
            try:
                item = await self.run(_next(pages))
            except StopAsyncIteration:
                return
            yield item


async def _next(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()
