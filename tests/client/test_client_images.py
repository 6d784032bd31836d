"""Every accepted kind of image input becomes the same upload bytes; other inputs are refused."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from vitserve.client.images import ImagePayload, sniff_content_type, to_payload


def test_path_bytes_and_file_object_give_the_file_bytes(
    tmp_path: Path, image_bytes: Callable[..., bytes]
) -> None:
    data = image_bytes(3, "PNG")
    path = tmp_path / "three.png"
    path.write_bytes(data)
    for image in (path, str(path)):
        assert to_payload(image) == ImagePayload("three.png", data, "image/png")
    assert to_payload(data).data == data
    assert to_payload(bytearray(data)).data == data
    assert to_payload(memoryview(data)).data == data
    with path.open("rb") as file:
        assert to_payload(file) == ImagePayload("three.png", data, "image/png")
    assert to_payload(io.BytesIO(data)).data == data


def test_pil_image_is_sent_losslessly(image_bytes: Callable[..., bytes]) -> None:
    original = Image.open(io.BytesIO(image_bytes(5, "JPEG")))
    payload = to_payload(original)
    assert payload.content_type == "image/png"
    decoded = Image.open(io.BytesIO(payload.data))
    assert decoded.tobytes() == original.convert("RGB").tobytes()
    cmyk = to_payload(original.convert("CMYK"))
    assert Image.open(io.BytesIO(cmyk.data)).mode == "RGB"


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_content_type_is_sniffed(fmt: str, content_type: str, image_bytes: Callable[..., bytes]) -> None:
    assert sniff_content_type(image_bytes(1, fmt)) == content_type


def test_unknown_bytes_are_octet_stream() -> None:
    assert sniff_content_type(b"hello") == "application/octet-stream"


def test_text_mode_files_and_other_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x")
    with path.open("r") as text_file, pytest.raises(TypeError, match="binary mode"):
        to_payload(text_file)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot classify a int"):
        to_payload(42)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        to_payload(tmp_path / "missing.png")


def test_client_imports_neither_pillow_nor_the_serving_stack() -> None:
    code = (
        "import sys, vitserve.client, vitserve.client.cli; "
        "heavy = [m for m in ('PIL', 'torch', 'bentoml', 'onnxruntime', 'numpy') if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
