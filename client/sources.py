"""The images to score: listed as relative "/"-separated paths, page by page, and read concurrently.

A local folder is walked with walk.py. An S3 prefix is listed with ListObjectsV2 through the
paginator of s3fs's own aiobotocore client, a GCS prefix with google-cloud-storage's pager, an Azure
one with the pager of adlfs's azure-storage-blob client, 1,000 keys a page: only the page in hand is
in memory, so a prefix of ten million keys streams like a small one. Other fsspec back-ends are
walked one "directory" at a time (`fs.walk`), which holds the largest directory's listing in memory.

The same rules pick the images everywhere: one of the wanted extensions (any case), no hidden
component (".git/", ".DS_Store"), no folder placeholders. Listing order never matters to the
scorer: resuming skips by path and sharding hashes the path.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from vitserve.client.errors import StorageError
from vitserve.client.storage import LoopBridge, filesystem, is_url, translate
from vitserve.client.walk import count_images, iter_images

PAGE = 1000  # paths handed over at a time; S3's own page size


class ImageSource(Protocol):
    """A folder or prefix of images."""

    location: str

    def pages(self) -> AsyncIterator[list[str]]:
        """The relative paths of the images, a page at a time."""
        ...

    async def read_many(self, paths: list[str]) -> list[bytes | OSError]:
        """The bytes of each image, read concurrently; in its place the OSError of one that cannot be
        read (vanished, denied: its row says so). A failure of the store itself raises StorageError."""
        ...

    def count(self, stop: threading.Event, keep: Callable[[str], bool] | None = None) -> int | None:
        """How many images `pages` yields (those `keep` accepts), listed again, blocking; None once
        `stop` is set."""
        ...


def wanted_path(relative: str, extensions: frozenset[str]) -> bool:
    """Whether a listed path is an image to score (extension, not hidden, not a folder)."""
    if not relative or relative.endswith("/"):
        return False
    if any(part.startswith(".") for part in relative.split("/")):
        return False
    return os.path.splitext(relative)[1].lower() in extensions


def open_source(location: str | os.PathLike[str], extensions: frozenset[str]) -> ImageSource:
    """The ImageSource for a local folder or a URL; NotADirectoryError for a missing local folder."""
    if is_url(location) and str(location).startswith("file://"):
        location = str(location).removeprefix("file://")
    if not is_url(location):
        root = Path(location)
        if not root.is_dir():
            raise NotADirectoryError(f"not a directory: {root}")
        return LocalSource(root, extensions)
    fs, path = filesystem(str(location))
    protocols = _protocols(fs)
    if "s3" in protocols:
        return S3Source(fs, path, str(location), extensions)
    if "gs" in protocols:
        return GCSSource(fs, path, str(location), extensions)
    if "az" in protocols or "abfs" in protocols:
        return AzureSource(fs, path, str(location), extensions)
    return WalkedSource(fs, path, str(location), extensions)


class LocalSource:
    """A local folder: walked depth first, each directory sorted; files read in the event loop
    (a small file's read() costs less than a hop to a thread and back)."""

    def __init__(self, root: Path, extensions: frozenset[str]) -> None:
        self.root = root
        self.location = str(root)
        self.extensions = extensions

    async def pages(self) -> AsyncIterator[list[str]]:
        walk = iter_images(self.root, self.extensions)
        while page := list(itertools.islice(walk, PAGE)):
            yield page

    async def read_many(self, paths: list[str]) -> list[bytes | OSError]:
        root = f"{self.root}{os.sep}"  # joined as strings: pathlib's parsing cost more than the read
        return [_read_local(root + path) for path in paths]

    def count(self, stop: threading.Event, keep: Callable[[str], bool] | None = None) -> int | None:
        if keep is None:
            return count_images(self.root, self.extensions, stop)
        return _count(iter_images(self.root, self.extensions), stop, keep)


class BucketSource:
    """A prefix of an object store whose back-end lists page by page; images read with fsspec."""

    def __init__(
        self, fs: Any, path: str, location: str, extensions: frozenset[str], page_size: int = PAGE
    ) -> None:
        self.fs = fs
        self.page_size = page_size
        self.bucket, _, key = path.partition("/")
        self.prefix = f"{key}/" if key else ""  # a folder: "photos" must not match "photos-old/"
        self.location = location
        self.extensions = extensions
        self._bridge = LoopBridge(fs)

    async def pages(self) -> AsyncIterator[list[str]]:
        async for keys in self._key_pages():
            yield self._images(keys)

    async def read_many(self, paths: list[str]) -> list[bytes | OSError]:
        return await self._bridge.run(self._read_all(paths))

    async def _read_all(self, paths: list[str]) -> list[bytes | OSError]:
        """Runs on fsspec's loop: one GET per image, all at once (the back-end bounds its pool)."""
        keys = [f"{self.bucket}/{self.prefix}{path}" for path in paths]
        found = await asyncio.gather(*(self.fs._cat_file(key) for key in keys), return_exceptions=True)
        return [
            _image_or_error(result, self.location, path) for result, path in zip(found, paths, strict=True)
        ]

    def count(self, stop: threading.Event, keep: Callable[[str], bool] | None = None) -> int | None:
        total = 0
        for keys in self._blocking_key_pages():
            if stop.is_set():
                return None
            images = self._images(keys)
            total += len(images) if keep is None else sum(map(keep, images))
        return total

    def _key_pages(self) -> AsyncIterator[list[str]]:
        """The full keys under the prefix, a listing page at a time."""
        raise NotImplementedError

    def _blocking_key_pages(self) -> Iterator[list[str]]:
        """The same, for a worker thread."""
        raise NotImplementedError

    def _images(self, keys: list[str]) -> list[str]:
        start = len(self.prefix)
        relative = (key[start:] for key in keys)
        return [path for path in relative if wanted_path(path, self.extensions)]


class LoopListedSource(BucketSource):
    """A bucket whose pager is an async iterator of the back-end's own client, on fsspec's loop."""

    def _key_pages(self) -> AsyncIterator[list[str]]:
        return self._bridge.iterate(self._listing())

    def _blocking_key_pages(self) -> Iterator[list[str]]:
        pages = self._listing()
        while True:
            keys = asyncio.run_coroutine_threadsafe(_next_page(pages), self._bridge.loop).result()
            if keys is None:
                return
            yield keys

    def _listing(self) -> AsyncIterator[list[str]]:
        """Runs on fsspec's loop: the keys of each listing page."""
        raise NotImplementedError


class S3Source(LoopListedSource):
    """An S3 (or S3-compatible) prefix: ListObjectsV2 through the paginator of s3fs's aiobotocore client."""

    async def _listing(self) -> AsyncIterator[list[str]]:
        """Runs on fsspec's loop: the keys of each ListObjectsV2 page."""
        try:
            await self.fs.set_session()
            paginator = self.fs.s3.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": self.page_size}
            )
            async for page in pages:
                yield [item["Key"] for item in page.get("Contents", ())]
        except Exception as exc:  # botocore's ClientError, into the OSError fsspec would raise
            from s3fs.errors import translate_boto_error

            error = translate_boto_error(exc) if not isinstance(exc, OSError) else exc
            raise translate(error, f"listing {self.location}") from exc


class AzureSource(LoopListedSource):
    """An Azure Blob Storage prefix: List Blobs a page at a time, through the pager of adlfs's own
    azure-storage-blob client (adlfs's find() collects every blob before returning)."""

    async def _listing(self) -> AsyncIterator[list[str]]:
        from azure.core.exceptions import AzureError, ClientAuthenticationError, ResourceNotFoundError

        try:
            async with self.fs.service_client.get_container_client(self.bucket) as container:
                blobs = container.list_blobs(name_starts_with=self.prefix, results_per_page=self.page_size)
                async for page in blobs.by_page():
                    yield [blob.name async for blob in page]
        except ResourceNotFoundError as exc:
            raise FileNotFoundError(f"listing {self.location}: {exc.message}") from exc
        except ClientAuthenticationError as exc:
            raise PermissionError(f"listing {self.location}: {exc.message}") from exc
        except (AzureError, OSError) as exc:
            raise StorageError(f"listing {self.location}: {type(exc).__name__}: {exc}") from exc


class GCSSource(BucketSource):
    """A Google Cloud Storage prefix: the JSON API's objects.list, a page at a time, through
    google-cloud-storage's pager (gcsfs's own listing collects every page before returning).

    google-cloud-storage comes with gcsfs, finds the same application default credentials, and
    honours STORAGE_EMULATOR_HOST as gcsfs does.
    """

    async def _key_pages(self) -> AsyncIterator[list[str]]:
        pages = self._blocking_key_pages()
        while (keys := await asyncio.to_thread(next, pages, None)) is not None:
            yield keys

    def _blocking_key_pages(self) -> Iterator[list[str]]:
        from google.api_core import exceptions
        from google.cloud import storage

        try:
            blobs = storage.Client().list_blobs(self.bucket, prefix=self.prefix, page_size=self.page_size)
            for page in blobs.pages:
                yield [blob.name for blob in page]
        except exceptions.NotFound as exc:
            raise FileNotFoundError(f"listing {self.location}: {exc.message}") from exc
        except (exceptions.Forbidden, exceptions.Unauthorized) as exc:
            raise PermissionError(f"listing {self.location}: {exc.message}") from exc
        except (exceptions.GoogleAPIError, OSError) as exc:
            raise StorageError(f"listing {self.location}: {type(exc).__name__}: {exc}") from exc


class WalkedSource:
    """Any other fsspec back-end: fs.walk, one directory listing at a time, in a worker thread."""

    def __init__(self, fs: Any, path: str, location: str, extensions: frozenset[str]) -> None:
        self.fs = fs
        self.root = path
        self.location = location
        self.extensions = extensions

    async def pages(self) -> AsyncIterator[list[str]]:
        walk = self._walk()
        while page := await asyncio.to_thread(lambda: list(itertools.islice(walk, PAGE))):
            yield page

    async def read_many(self, paths: list[str]) -> list[bytes | OSError]:
        keys = [f"{self.root}/{path}" for path in paths]
        found = await asyncio.to_thread(self.fs.cat, keys, on_error="return")
        return [
            _image_or_error(found[key], self.location, path) for key, path in zip(keys, paths, strict=True)
        ]

    def count(self, stop: threading.Event, keep: Callable[[str], bool] | None = None) -> int | None:
        return _count(self._walk(), stop, keep)

    def _walk(self) -> Iterator[str]:
        start = len(self.root) + 1
        try:
            for directory, _, files in self.fs.walk(self.root):
                for name in sorted(files):
                    relative = f"{directory}/{name}"[start:]
                    if wanted_path(relative, self.extensions):
                        yield relative
        except OSError as exc:
            raise translate(exc, f"listing {self.location}") from exc


def _read_local(path: str) -> bytes | OSError:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        return exc


def _image_or_error(result: object, location: str, path: str) -> bytes | OSError:
    """One read's outcome: its bytes; its error if the image alone is at fault; else raise."""
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result)
    if isinstance(result, FileNotFoundError | PermissionError | IsADirectoryError):
        return result
    if isinstance(result, OSError):
        raise translate(result, f"reading {location}/{path}") from result
    if isinstance(result, BaseException):
        raise result
    raise TypeError(f"reading {location}/{path} gave a {type(result).__name__}")


def _count(paths: Iterator[str], stop: threading.Event, keep: Callable[[str], bool] | None) -> int | None:
    total = 0
    for path in paths:
        if stop.is_set():
            return None
        if keep is None or keep(path):
            total += 1
    return total


async def _next_page(pages: AsyncIterator[list[str]]) -> list[str] | None:
    try:
        return await pages.__anext__()
    except StopAsyncIteration:
        return None


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
