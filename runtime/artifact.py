"""What a vitserve ONNX artifact carries besides its graph: labels, preprocessing, provenance.

The exporter writes these fields into the model's `metadata_props`; the service reads them back, so
the two sides share this one schema and nothing (labels, mean/std, input size) is hard-coded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Names of the graph's input and output; the exporter creates them, the runtime feeds them.
INPUT_NAME = "pixels"  # uint8 (N, H, W, 3), RGB, already resized to the model's input size
OUTPUT_NAME = "logits"  # float32 (N, num_classes)

METADATA_KEY = "vitserve"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
# The explanation graph: the same weights through the manual attention path, returning each block's
# attention probabilities beside the logits (what POST /explain needs). A variant like the precisions.
EXPLAIN = "explain"
# File names in a model folder, one self-contained .onnx per variant: `vitserve export` writes them,
# the runtime looks for them.
ARTIFACT_FILES: dict[str, str] = {
    "fp32": "model.onnx",
    "fp16": "model.fp16.onnx",
    "int8": "model.int8.onnx",
    EXPLAIN: "model.explain.onnx",
}
# Resampling filters an artifact may ask for, by Pillow's names (runtime/decode.py maps them).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


class ArtifactError(ValueError):
    """The file is not a vitserve artifact, or its metadata is malformed."""


@dataclass(frozen=True)
class DigitNormalisation:
    """Prepare a photo the way MNIST's digits were prepared (runtime/digit_preprocess.py).

    Find the one mark on a plain background, make it white on black, fit it in a `box` square and
    centre its mass in the image_size square. Only digit models trained behind it ask for it.
    """

    box: int = 20  # MNIST: each digit fitted in 20x20, then centred by its mass in 28x28

    def __post_init__(self) -> None:
        if self.box <= 0:
            raise ArtifactError(f"digit_normalisation box must be positive, got {self.box}")


@dataclass(frozen=True)
class Preprocessing:
    """How request pixels become the model's input; applied outside (resize) and inside (normalise)."""

    image_size: int
    # Resize the shorter side to image_size / crop_pct, then centre-crop image_size (timm convention).
    crop_pct: float = 1.0
    interpolation: str = "bilinear"  # one of Pillow's: nearest, bilinear, bicubic, lanczos
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # None (and absent from the JSON): plain resize and crop, as every Hugging Face and timm export.
    digit_normalisation: DigitNormalisation | None = None

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ArtifactError(f"image_size must be positive, got {self.image_size}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ArtifactError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ArtifactError(f"unknown interpolation {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ArtifactError(f"mean/std must be 3 values with std > 0, got {self.mean}/{self.std}")
        if self.digit_normalisation is not None and self.digit_normalisation.box > self.image_size:
            raise ArtifactError(
                f"digit_normalisation box {self.digit_normalisation.box} exceeds image_size {self.image_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; digit_normalisation only when set, so other models' metadata is unchanged."""
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        if self.digit_normalisation is None:
            del data["digit_normalisation"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            image_size=int(data["image_size"]),
            crop_pct=float(data.get("crop_pct", 1.0)),
            interpolation=str(data.get("interpolation", "bilinear")),
            mean=tuple(float(v) for v in data.get("mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data.get("std", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            digit_normalisation=(
                DigitNormalisation(box=int(data["digit_normalisation"]["box"]))
                if data.get("digit_normalisation") is not None
                else None
            ),
        )


@dataclass(frozen=True)
class ArtifactMetadata:
    model_name: str
    model_version: str
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    precision: str
    fused_attention: int
    depth: int
    source_sha256: str
    exporter_version: str
    extra: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ArtifactError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.labels:
            raise ArtifactError("an artifact needs at least one label")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def batch_max_abs_logit(self) -> float | None:
        """The export gate's largest logit change of an image between alone and inside mixed batches;
        None for an artifact exported before that gate."""
        value = self.extra.get("gate_batch_max_abs_logit")
        return None if value is None else float(value)

    def to_json(self) -> str:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["preprocessing"] = self.preprocessing.to_dict()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArtifactMetadata:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ArtifactError(f"vitserve metadata must be a JSON object, got {type(data).__name__}")
            if data.get("format_version") != FORMAT_VERSION:
                raise ArtifactError(f"unsupported artifact format_version {data.get('format_version')!r}")
            # A JSON string is iterable too: "abc" must not become the labels a, b, c.
            if not isinstance(data.get("labels"), list):
                raise ArtifactError(f"labels must be a JSON list, got {data.get('labels')!r}")
            return cls(
                model_name=str(data["model_name"]),
                model_version=str(data["model_version"]),
                labels=tuple(str(label) for label in data["labels"]),
                preprocessing=Preprocessing.from_dict(data["preprocessing"]),
                precision=str(data["precision"]),
                fused_attention=int(data["fused_attention"]),
                depth=int(data["depth"]),
                source_sha256=str(data["source_sha256"]),
                exporter_version=str(data["exporter_version"]),
                extra={str(k): str(v) for k, v in dict(data.get("extra", {})).items()},
            )
        except ArtifactError:
            raise
        # ValueError covers JSONDecodeError and int("six"); AttributeError a non-object where one is due.
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"malformed vitserve metadata: {exc!r}") from exc


def read_metadata(path: str | Path) -> ArtifactMetadata:
    """Read the metadata of an ONNX artifact without loading its weights into memory."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise ArtifactError(f"{path} is not an ONNX model: {exc}") from exc
    return metadata_from_props({p.key: p.value for p in model.metadata_props}, path)


def metadata_from_props(props: dict[str, str], path: str | Path = "<model>") -> ArtifactMetadata:
    if METADATA_KEY not in props:
        raise ArtifactError(f"{path} has no '{METADATA_KEY}' metadata; export it with `vitserve export`")
    return ArtifactMetadata.from_json(props[METADATA_KEY])
