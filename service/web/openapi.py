"""The OpenAPI document's parts: the response bodies as pydantic models, and the request side FastAPI cannot
infer (the routes read their bodies themselves)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from vitserve.runtime.rollout import HEAD_FUSIONS
from vitserve.service.flow.explain import FORMATS


class ModelRef(BaseModel):
    name: str
    version: str


class TopKEntry(BaseModel):
    label: str
    index: int
    score: float = Field(ge=0.0, le=1.0)


class Classification(BaseModel):
    label: str
    score: float = Field(ge=0.0, le=1.0)
    top_k: list[TopKEntry]
    model: ModelRef


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code, e.g. invalid_image, overloaded")
    message: str = Field(description="what was wrong and what to do about it")


class BatchItem(BaseModel):
    """Either a classification (label, score, top_k) or an error (error, message) for one image."""

    label: str | None = None
    score: float | None = None
    top_k: list[TopKEntry] | None = None
    error: str | None = None
    message: str | None = None


class BatchClassification(BaseModel):
    results: list[BatchItem]
    model: ModelRef


class ModelInfo(BaseModel):
    name: str
    version: str
    labels: list[str]
    input_size: list[int]
    precision: str
    providers: list[str]
    artifact: str
    artifact_choice: str
    # The export gate's largest logit change of an image alone vs in mixed batches; None: not gated.
    batch_max_abs_logit: float | None
    artifact_mib: float  # the served ONNX file
    # What loading and warming up the model's sessions added to the worker's resident memory, at rest.
    memory_mib: float | None
    # Whether the model's CPU sessions (batch runners and the one for a batch alone) read one copy of
    # the weights; None where the model does not say.
    weights_shared: bool | None = None
    preprocessing: dict[str, object]
    fused_attention: int
    max_batch_size: int
    max_latency_ms: int
    max_batch_images: int


# The request side of the OpenAPI entries: the routes read their bodies themselves (service/web/parsing.py),
# so FastAPI cannot infer these from a signature.
FILE = {"type": "string", "format": "binary"}
TOP_K_PARAM = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "how many classes to return (default 5, capped at the number of classes)",
}
EXPLAIN_PARAMS = [
    {
        "name": "format",
        "in": "query",
        "schema": {"type": "string", "enum": list(FORMATS), "default": "both"},
        "description": "both: JSON with the map and a base64 PNG overlay; json: the map only; "
        "png: the overlay PNG itself (prediction in X-Vitserve-Label / X-Vitserve-Score headers)",
    },
    {
        "name": "class",
        "in": "query",
        "schema": {"type": "string"},
        "description": "label or index whose score to report with the map (rollout is class-agnostic: "
        "the map itself does not change)",
    },
    {
        "name": "head_fusion",
        "in": "query",
        "schema": {"type": "string", "enum": list(HEAD_FUSIONS), "default": "mean"},
        "description": "how each layer's attention heads are combined",
    },
    TOP_K_PARAM,
]
IMAGE_ERRORS = (400, 408, 413, 415, 422, 429, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": "error"} for status in statuses}


def image_request_body(
    field: str, many: bool, media_types: Iterable[str], form_top_k: bool = True
) -> dict[str, Any]:
    """A multipart form with `field` (repeated if `many`), or for one image the raw image as the body."""
    form_field = {"type": "array", "items": FILE, "minItems": 1} if many else FILE
    properties: dict[str, Any] = {field: form_field}
    if form_top_k:
        properties["top_k"] = {"type": "integer", "minimum": 1}
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "required": [field], "properties": properties}}
    }
    if not many:
        for media_type in media_types:
            content[media_type] = {"schema": FILE}
    return {"required": True, "content": content}


def explain_responses() -> dict[int | str, dict[str, Any]]:
    ok = {
        "description": "the prediction and its attention rollout map",
        "content": {"application/json": {"schema": {"type": "object"}}, "image/png": {"schema": FILE}},
    }
    return {200: ok, **error_responses(*IMAGE_ERRORS)}
