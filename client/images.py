"""Turning what a caller hands us (a path, bytes, a file object, a PIL image) into upload bytes.

Pillow is imported only when the caller passes a PIL image, so the client runs without it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# Magic numbers of the formats the server decodes; the content type only helps the server's
# error messages and logs: the server decodes by content, not by this header.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


@dataclass(frozen=True)
class ImagePayload:
    """One image, ready to upload: a file name for the server's messages, the bytes, their type."""

    filename: str
    data: bytes
    content_type: str


ImageInput = Union[str, os.PathLike[str], bytes, bytearray, memoryview, IO[bytes], "PILImage", ImagePayload]


def sniff_content_type(data: bytes) -> str:
    """The image/* type that `data` starts like, or application/octet-stream."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    return "application/octet-stream"


def to_payload(image: ImageInput, filename: str | None = None) -> ImagePayload:
    """Read `image` into an ImagePayload; raises TypeError for anything that is not an image input."""
    if isinstance(image, ImagePayload):
        return image
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        data = path.read_bytes()
        name = filename or path.name
    elif isinstance(image, bytes | bytearray | memoryview):
        data, name = bytes(image), filename or "image"
    elif hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, bytes):
            raise TypeError(
                f"file objects must be opened in binary mode, got {type(data).__name__} from read()"
            )
        name = filename or os.path.basename(str(getattr(image, "name", "image")))
    elif _is_pil_image(image):
        data, name = _encode_pil(image), filename or "image.png"
    else:
        raise TypeError(
            f"cannot classify a {type(image).__name__}: "
            "pass a path, bytes, a binary file object or a PIL image"
        )
    return ImagePayload(filename=name, data=data, content_type=sniff_content_type(data))


def _is_pil_image(obj: Any) -> bool:
    # Checked by module name first so that Pillow is not imported for inputs that are not images.
    if not type(obj).__module__.startswith("PIL."):
        return False
    from PIL import Image

    return isinstance(obj, Image.Image)


def _encode_pil(image: PILImage) -> bytes:
    """PNG, because it is lossless: the server sees exactly the pixels the caller has."""
    if image.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
        image = image.convert("RGB")  # CMYK, YCbCr, HSV, ...: PNG cannot hold them
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
