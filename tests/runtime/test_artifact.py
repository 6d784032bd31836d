"""The artifact metadata schema: a lossless JSON round trip, and ArtifactError for anything malformed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from vitserve.runtime.artifact import (
    FORMAT_VERSION,
    METADATA_KEY,
    ArtifactError,
    ArtifactMetadata,
    DigitNormalisation,
    Preprocessing,
    metadata_from_props,
    read_metadata,
)

METADATA = ArtifactMetadata(
    model_name="tiny-vit",
    model_version="1.2.3",
    labels=("zero", "one", "two", "drei", "ünicode label"),
    preprocessing=Preprocessing(
        image_size=32, crop_pct=0.875, interpolation="bicubic", mean=(0.4, 0.45, 0.5), std=(0.2, 0.25, 0.3)
    ),
    precision="int8",
    fused_attention=6,
    depth=6,
    source_sha256="ab" * 32,
    exporter_version="0.1.0",
    extra={"heldout_top1": "0.98", "note": "made by a test"},
)


def as_dict() -> dict[str, Any]:
    return json.loads(METADATA.to_json())  # type: ignore[no-any-return]


def with_changes(**changes: Any) -> str:
    return json.dumps({**as_dict(), **changes})


def onnx_file(path: Path, props: dict[str, str]) -> Path:
    """A one-node ONNX model carrying `props` as metadata_props, written to `path`."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_json_round_trip_is_lossless() -> None:
    restored = ArtifactMetadata.from_json(METADATA.to_json())
    assert restored == METADATA
    assert isinstance(restored.labels, tuple) and isinstance(restored.preprocessing.mean, tuple)
    assert restored.num_classes == 5


def test_json_is_stable_text() -> None:
    """Sorted keys: the same metadata always serialises to the same bytes (artifacts hash reproducibly)."""
    assert METADATA.to_json() == ArtifactMetadata.from_json(METADATA.to_json()).to_json()
    assert as_dict()["format_version"] == FORMAT_VERSION
    assert list(as_dict()) == sorted(as_dict())


def test_optional_fields_take_their_defaults() -> None:
    data = as_dict()
    del data["extra"]
    data["preprocessing"] = {"image_size": 64}
    restored = ArtifactMetadata.from_json(json.dumps(data))
    assert restored.extra == {}
    assert restored.preprocessing == Preprocessing(image_size=64)


def test_read_metadata_from_an_onnx_file(tmp_path: Path) -> None:
    path = onnx_file(tmp_path / "model.onnx", {"other": "kept", METADATA_KEY: METADATA.to_json()})
    assert read_metadata(path) == METADATA
    assert read_metadata(str(path)) == METADATA


def test_an_onnx_file_without_vitserve_metadata(tmp_path: Path) -> None:
    path = onnx_file(tmp_path / "plain.onnx", {"producer": "someone else"})
    with pytest.raises(ArtifactError, match="vitserve export"):
        read_metadata(path)
    with pytest.raises(ArtifactError, match="no 'vitserve' metadata"):
        metadata_from_props({}, "somewhere")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "malformed"),
        ("{", "malformed"),
        (with_changes(format_version=2), "format_version"),
        (json.dumps({k: v for k, v in as_dict().items() if k != "format_version"}), "format_version"),
        (json.dumps({k: v for k, v in as_dict().items() if k != "labels"}), "labels"),
        (json.dumps({k: v for k, v in as_dict().items() if k != "preprocessing"}), "preprocessing"),
        (with_changes(labels=[]), "at least one label"),
        (with_changes(labels=5), "malformed|labels"),
        (with_changes(precision="bf16"), "precision"),
        (with_changes(preprocessing={"crop_pct": 0.9}), "image_size"),
        (with_changes(preprocessing={"image_size": 0}), "image_size"),
        (with_changes(preprocessing={"image_size": 32, "crop_pct": 1.5}), "crop_pct"),
        (with_changes(preprocessing={"image_size": 32, "interpolation": "area"}), "interpolation"),
        (with_changes(preprocessing={"image_size": 32, "mean": [0.5, 0.5]}), "mean/std"),
        (with_changes(preprocessing={"image_size": 32, "std": [0.5, 0.0, 0.5]}), "mean/std"),
        (with_changes(preprocessing={"image_size": 32, "mean": 5}), "malformed"),
        (with_changes(preprocessing=[32]), "malformed"),
        (with_changes(preprocessing={"image_size": 28, "digit_normalisation": {"box": 0}}), "box"),
        (with_changes(preprocessing={"image_size": 28, "digit_normalisation": {"box": 40}}), "exceeds"),
        (with_changes(preprocessing={"image_size": 28, "digit_normalisation": {}}), "malformed"),
        (with_changes(preprocessing={"image_size": 28, "digit_normalisation": 20}), "malformed"),
    ],
)
def test_malformed_metadata_raises_artifact_error(text: str, match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        ArtifactMetadata.from_json(text)


# Found by these tests; the fix belongs in runtime/artifact.py (lead-owned), see the report. Strict, so
# that the fix turns them into failures that ask for the marker to be removed.


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[1, 2]", id="json-array"),
        pytest.param("null", id="json-null"),
        pytest.param('"text"', id="json-string"),
        pytest.param(with_changes(extra=["a"]), id="extra-not-an-object"),
        pytest.param(with_changes(fused_attention="six"), id="int-field-not-a-number"),
        pytest.param(with_changes(preprocessing={"image_size": "big"}), id="image-size-not-a-number"),
        pytest.param(
            with_changes(preprocessing={"image_size": 32, "mean": ["a", 1, 2]}), id="mean-not-numbers"
        ),
    ],
)
def test_wrongly_typed_metadata_raises_artifact_error(text: str) -> None:
    with pytest.raises(ArtifactError):
        ArtifactMetadata.from_json(text)


def test_labels_must_be_a_list_not_a_string() -> None:
    """A string is iterable: "abc" would silently become three labels a, b, c."""
    with pytest.raises(ArtifactError):
        ArtifactMetadata.from_json(with_changes(labels="abc"))


def test_a_file_that_is_not_onnx_raises_artifact_error(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"garbage\x00\xff\x12")
    with pytest.raises(ArtifactError):
        read_metadata(path)


def test_preprocessing_is_frozen() -> None:
    with pytest.raises(AttributeError):
        METADATA.preprocessing.image_size = 64  # type: ignore[misc]


def test_digit_normalisation_round_trips_and_is_absent_unless_asked_for() -> None:
    digits = ArtifactMetadata.from_json(
        with_changes(preprocessing={"image_size": 28, "digit_normalisation": {"box": 20}})
    )
    assert digits.preprocessing.digit_normalisation == DigitNormalisation(box=20)
    assert ArtifactMetadata.from_json(digits.to_json()) == digits
    # Every other model (Hugging Face, timm, older digits) reads as before and writes no such key,
    # so their metadata text is exactly what it was before the field existed.
    assert METADATA.preprocessing.digit_normalisation is None
    assert "digit_normalisation" not in as_dict()["preprocessing"]
    assert set(as_dict()["preprocessing"]) == {"image_size", "crop_pct", "interpolation", "mean", "std"}
