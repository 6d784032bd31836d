"""service/web/multipart.py parses what Starlette's streaming parser parses, and refuses what it refuses.

Bodies are encoded by httpx (what the client SDK and most Python clients send) and by hand for the
malformed ones; each is parsed by both parsers and the results compared.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from vitserve.service.web.multipart import MultipartError, parse_form

LIMITS = {"max_files": 4, "max_fields": 3}
FIELD_SIZE = 1024


def encoded(files: Any, data: dict[str, str] | None = None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


def starlette_parts(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]] | str:
    async def go() -> list[tuple[str, str | None, bytes]]:
        headers = Headers({"content-type": content_type})
        parser = MultiPartParser(headers, _once(body), **LIMITS, max_part_size=FIELD_SIZE)
        form = await parser.parse()
        parts = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                parts.append((name, value.filename, await value.read()))
            else:
                parts.append((name, None, value.encode()))
        await form.close()
        return parts

    try:
        return asyncio.run(go())
    except MultiPartException as exc:
        return exc.message


def our_parts(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]] | str:
    try:
        return [
            (p.name, p.filename, p.data)
            for p in parse_form(body, content_type, **LIMITS, max_field_size=FIELD_SIZE)
        ]
    except MultipartError as exc:
        return str(exc)


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3  # binary, with CRLFs and dashes inside
WELL_FORMED = {
    "one file": encoded({"image": ("d.png", PNG, "image/png")}),
    "file and field": encoded({"image": ("d.png", PNG, "image/png")}, {"top_k": "3"}),
    "several files": encoded([("images", (f"{i}.png", PNG[i:], "image/png")) for i in range(4)]),
    "empty file": encoded({"image": ("e.png", b"", "image/png")}),
    "unicode names": encoded({"image": ("café 日本.png", PNG, "image/png")}, {"note": "naïve"}),
    "quote in filename": encoded({"image": ('a"b.png', PNG, "image/png")}),
    "text where a file belongs": encoded({"x": ("x.png", PNG, "image/png")}, {"image": "http://evil/"}),
}


@pytest.mark.parametrize("case", list(WELL_FORMED))
def test_well_formed_bodies_parse_the_same(case: str) -> None:
    body, content_type = WELL_FORMED[case]
    ours = our_parts(body, content_type)
    assert isinstance(ours, list) and ours
    assert ours == starlette_parts(body, content_type)


def test_a_preamble_and_an_epilogue_are_ignored() -> None:
    body, content_type = WELL_FORMED["file and field"]
    wrapped = b"a preamble\r\n" + body + b"an epilogue\r\n"
    assert our_parts(wrapped, content_type) == our_parts(body, content_type)


def _limit_bodies() -> dict[str, tuple[bytes, str]]:
    return {
        "too many files": encoded([("images", (f"{i}.png", PNG, "image/png")) for i in range(5)]),
        "too many fields": encoded({"image": ("d.png", PNG, "image/png")}, {f"f{i}": "1" for i in range(4)}),
        "a field over 1 KB": encoded({"image": ("d.png", PNG, "image/png")}, {"top_k": "9" * 1025}),
    }


@pytest.mark.parametrize("case", list(_limit_bodies()))
def test_the_limits_are_starlettes(case: str) -> None:
    body, content_type = _limit_bodies()[case]
    assert our_parts(body, content_type) == starlette_parts(body, content_type)  # the same message


MALFORMED = {
    "no boundary in the type": (b"--x\r\n", "multipart/form-data"),
    "no delimiter": (b"just bytes", "multipart/form-data; boundary=x"),
    "cut after the delimiter": (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
    "no close": (
        b'--x\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nabc',
        "multipart/form-data; boundary=x",
    ),
    "no name": (
        b'--x\r\nContent-Disposition: form-data; filename="a"\r\n\r\nabc\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bodies_are_refused(case: str) -> None:
    body, content_type = MALFORMED[case]
    assert isinstance(our_parts(body, content_type), str)
