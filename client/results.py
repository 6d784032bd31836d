"""What the server answers, as typed values: Prediction, TopK, ModelRef, ModelInfo.

Parsing is strict: a body that does not follow the API raises ServerError (the server's fault),
so that a half-understood answer never becomes a wrong row in someone's results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitserve.client.errors import ServerError


@dataclass(frozen=True)
class ModelRef:
    """Which model answered: its name and version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class TopK:
    """One of the k most likely classes."""

    label: str
    index: int  # position of the class in the model's label list
    score: float  # softmax probability


@dataclass(frozen=True)
class Prediction:
    """The server's answer for one image: the best class, the k best, and the model that answered."""

    label: str
    score: float
    top_k: tuple[TopK, ...]  # descending by score; top_k[0] is (label, score)
    model: ModelRef


@dataclass(frozen=True)
class ModelInfo:
    """What GET /model says about the served model."""

    name: str
    version: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width) the server resizes images to
    precision: str
    providers: tuple[str, ...]
    extra: dict[str, Any]  # any further fields the server reports, untouched

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version)


def parse_model_ref(data: Any) -> ModelRef:
    with _malformed("model"):
        return ModelRef(name=str(data["name"]), version=str(data["version"]))


def parse_prediction(data: Any, model: ModelRef | None = None) -> Prediction:
    """A Prediction from one /classify body; `model` is used when the body has none (batch items)."""
    with _malformed("prediction"):
        top_k = tuple(
            TopK(label=str(k["label"]), index=int(k["index"]), score=float(k["score"])) for k in data["top_k"]
        )
        ref = parse_model_ref(data["model"]) if "model" in data else model
        if ref is None:
            raise KeyError("model")
        return Prediction(label=str(data["label"]), score=float(data["score"]), top_k=top_k, model=ref)


def parse_model_info(data: Any) -> ModelInfo:
    known = {"name", "version", "labels", "input_size", "precision", "providers"}
    with _malformed("model info"):
        height, width = (int(v) for v in data["input_size"])
        return ModelInfo(
            name=str(data["name"]),
            version=str(data["version"]),
            labels=tuple(str(label) for label in data["labels"]),
            input_size=(height, width),
            precision=str(data.get("precision", "")),
            providers=tuple(str(p) for p in data.get("providers", ())),
            extra={k: v for k, v in data.items() if k not in known},
        )


class _malformed:
    """Turns a missing or mistyped field into ServerError, chained to the lookup that failed."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, KeyError | TypeError | ValueError | AttributeError):
            raise ServerError(
                f"the server's {self.what} does not follow the API ({type(exc).__name__}: {exc})",
                code="invalid_response",
            ) from exc
