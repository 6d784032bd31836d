"""Request bodies built once and sent unchanged: the load generators spend no CPU per request on them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence


def multipart(parts: Sequence[tuple[str, str | None, bytes, str]]) -> tuple[bytes, str]:
    """(field, filename or None for a text field, data, part content type) -> (body, Content-Type)."""
    boundary = f"vitserve-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for field, filename, data, content_type in parts:
        disposition = f'form-data; name="{field}"'
        headers = f"--{boundary}\r\nContent-Disposition: {disposition}"
        if filename is not None:
            part_type = content_type or "application/octet-stream"
            headers += f'; filename="{filename}"\r\nContent-Type: {part_type}'
        chunks += [headers.encode(), b"\r\n\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
