"""multipart/form-data of a body already in memory: the parts' names, file names and bytes.

The classify routes read the whole body first (with its size limit and timeout, service/web/parsing.py),
so nothing here streams. Starlette's parser, built for streaming, wrapped every file in an UploadFile
over a SpooledTemporaryFile and called back into Python per header and per chunk, a large share of the
event loop's busy time (docs/benchmarks.md, "Where the time goes"). Here the boundaries are found with
`bytes.find`. The limits are Starlette's (files, fields, a field's size) and a part is a file exactly
when its Content- Disposition has a filename, as there; tests/service/test_multipart.py parses the same
bodies both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import parse_options_header

CRLF = b"\r\n"


class MultipartError(ValueError):
    """The body is not the multipart/form-data it says it is, or passes a limit."""


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None  # None: a text field, not a file
    data: bytes

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    def text(self) -> str:
        return _decode(self.data)


def boundary_of(content_type: str) -> bytes:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise MultipartError("missing boundary in the Content-Type")
    return boundary


def parse_form(
    body: bytes, content_type: str, max_files: int, max_fields: int, max_field_size: int
) -> list[Part]:
    """The parts of `body`, in order."""
    delimiter = b"--" + boundary_of(content_type)
    if body.startswith(delimiter):
        position = 0
    else:  # a preamble, which ends with the CRLF before the first delimiter
        position = body.find(CRLF + delimiter)
        if position < 0:
            raise MultipartError("no part delimiter in the body")
        position += len(CRLF)
    parts: list[Part] = []
    files = fields = 0
    while True:
        position += len(delimiter)
        if body.startswith(b"--", position):
            return parts  # the close delimiter; what follows is the epilogue
        line_end = body.find(CRLF, position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise MultipartError("a part delimiter is not followed by a line break")
        headers_end = body.find(CRLF + CRLF, line_end)
        if headers_end < 0:
            raise MultipartError("a part's headers do not end")
        name, filename = _disposition(body[line_end + len(CRLF) : headers_end])
        content_start = headers_end + 2 * len(CRLF)
        content_end = body.find(CRLF + delimiter, content_start)
        if content_end < 0:
            raise MultipartError("the body ends inside a part")
        data = body[content_start:content_end]
        if filename is None:
            fields += 1
            if fields > max_fields:
                raise MultipartError(f"Too many fields. Maximum number of fields is {max_fields}.")
            if len(data) > max_field_size:
                raise MultipartError(f"Part exceeded maximum size of {max_field_size // 1024}KB.")
        else:
            files += 1
            if files > max_files:
                raise MultipartError(f"Too many files. Maximum number of files is {max_files}.")
        parts.append(Part(name, filename, data))
        position = content_end + len(CRLF)


def _disposition(headers: bytes) -> tuple[str, str | None]:
    """The part's field name and file name, from its Content-Disposition header."""
    for line in headers.split(CRLF):
        key, colon, value = line.partition(b":")
        if not colon:
            raise MultipartError("a part header has no colon")
        if key.strip().lower() == b"content-disposition":
            _, options = parse_options_header(value.strip())
            if b"name" not in options:
                raise MultipartError('the Content-Disposition header has no "name"')
            filename = options.get(b"filename")
            return _decode(options[b"name"]), None if filename is None else _decode(filename)
    raise MultipartError("a part has no Content-Disposition header")


def _decode(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")
