"""What the served model takes and gives over v2: its metadata, and a parsed request checked against it.

Two inputs, either one per request: `image`, BYTES [N] of encoded images (decoded exactly as /classify
decodes them), or `pixels`, UINT8 [N, H, W, 3] already at the model's input size. One output,
`probabilities`, FP32 [N, C]; asked for with `"parameters": {"classification": k}` it comes as Triton's
classification extension instead: BYTES [N, k] of "score:index:label", the k likeliest classes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitserve.runtime.artifact import ArtifactMetadata
from vitserve.service.v2.errors import bad_request, not_found, too_large
from vitserve.service.v2.tensors import InferRequest

IMAGE_INPUT = "image"
PIXELS_INPUT = "pixels"
PROBABILITIES_OUTPUT = "probabilities"
PLATFORM = "onnxruntime_onnx"  # Triton's platform name for an ONNX model served by ONNX Runtime


@dataclass(frozen=True)
class OutputRequest:
    """One output of the answer: probabilities (classification 0) or the top `classification` classes."""

    name: str
    classification: int


@dataclass(frozen=True)
class InferJob:
    """A request the model can serve: the images or the pixels, and the outputs to answer with."""

    images: tuple[bytes, ...] | None
    pixels: np.ndarray | None
    outputs: tuple[OutputRequest, ...]

    @property
    def count(self) -> int:
        return len(self.images) if self.images is not None else len(self.pixels)  # type: ignore[arg-type]

    @property
    def top_k(self) -> int:
        """The ranking the flow computes: enough for the largest classification asked, else one."""
        return max((o.classification for o in self.outputs), default=0) or 1


class ModelSpec:
    """The served model as v2 names it, and the checks each request passes before any work."""

    def __init__(self, metadata: ArtifactMetadata, max_images: int) -> None:
        self.name = metadata.model_name
        self.version = metadata.model_version
        self.labels = metadata.labels
        self.image_size = metadata.preprocessing.image_size
        self.max_images = max_images  # /classify_batch's limit, for a request's N

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    def find(self, name: str, version: str | None) -> None:
        """404 unless (name, version) is the served model; no version means the one served."""
        if name != self.name:
            raise not_found(f"unknown model '{name}'; this server serves '{self.name}'")
        if version and version != self.version:
            raise not_found(
                f"unknown version '{version}' of model '{name}'; the version served is '{self.version}'"
            )

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata (REST form), with the labels in class-index order."""
        classes = len(self.labels)
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [
                {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
                {"name": PIXELS_INPUT, "datatype": "UINT8", "shape": [-1, *self.pixel_shape]},
            ],
            "outputs": [{"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, classes]}],
            "labels": list(self.labels),
        }

    def job(self, request: InferRequest) -> InferJob:
        """The request checked against the model: one input of the right name, datatype and shape."""
        expected = (
            f"'{IMAGE_INPUT}' (BYTES [N], encoded images) or "
            f"'{PIXELS_INPUT}' (UINT8 [N, {self.image_size}, {self.image_size}, 3])"
        )
        if len(request.inputs) != 1:
            names = [t.name for t in request.inputs]
            raise bad_request(f"send exactly one input, {expected}; got {len(names)}: {names}")
        (tensor,) = request.inputs
        if tensor.name == IMAGE_INPUT:
            if tensor.datatype != "BYTES":
                raise bad_request(f"input '{IMAGE_INPUT}' must be BYTES, got {tensor.datatype}")
            if len(tensor.shape) != 1:
                raise bad_request(f"input '{IMAGE_INPUT}' must have shape [N], got {list(tensor.shape)}")
            images, pixels = tensor.data, None
            assert isinstance(images, tuple)
        elif tensor.name == PIXELS_INPUT:
            if tensor.datatype != "UINT8":
                raise bad_request(f"input '{PIXELS_INPUT}' must be UINT8, got {tensor.datatype}")
            if len(tensor.shape) != 4 or tensor.shape[1:] != self.pixel_shape:
                raise bad_request(
                    f"input '{PIXELS_INPUT}' must have shape [N, {self.image_size}, {self.image_size}, 3], "
                    f"got {list(tensor.shape)}"
                )
            assert isinstance(tensor.data, np.ndarray)
            images, pixels = None, tensor.data.reshape(tensor.shape)
        else:
            raise bad_request(f"unknown input '{tensor.name}'; send {expected}")
        count = tensor.shape[0]
        if count < 1:
            raise bad_request(f"input '{tensor.name}' holds no image (N = 0)")
        if count > self.max_images:
            raise too_large(f"{count} images in one request; the limit is {self.max_images}")
        return InferJob(images, pixels, self._outputs(request))

    def _outputs(self, request: InferRequest) -> tuple[OutputRequest, ...]:
        if not request.outputs:
            return (OutputRequest(PROBABILITIES_OUTPUT, 0),)
        outputs = []
        for output in request.outputs:
            if output.name != PROBABILITIES_OUTPUT:
                raise bad_request(
                    f"unknown output '{output.name}'; the model's output is '{PROBABILITIES_OUTPUT}'"
                )
            k = output.parameters.get("classification", 0)
            if not isinstance(k, int) or isinstance(k, bool) or k < 0:
                raise bad_request(f"classification must be a non-negative integer, got {k!r}")
            outputs.append(OutputRequest(output.name, min(k, len(self.labels))))
        if len(outputs) > 1:
            raise bad_request(f"output '{PROBABILITIES_OUTPUT}' is asked for {len(outputs)} times; ask once")
        return tuple(outputs)
