"""Response bodies of the public API, as pydantic models: they are the OpenAPI document's schemas."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
    preprocessing: dict[str, object]
    fused_attention: int
    max_batch_size: int
    max_latency_ms: int
    max_batch_images: int
