"""Write verified variants: metadata into metadata_props, one self-contained file each, atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import onnx

from vitserve.runtime.artifact import METADATA_KEY, ArtifactMetadata


def with_metadata(model: onnx.ModelProto, metadata: ArtifactMetadata) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [p for p in out.metadata_props if p.key != METADATA_KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(kept)
    out.metadata_props.add(key=METADATA_KEY, value=metadata.to_json())
    out.producer_name = "vitserve"
    out.producer_version = metadata.exporter_version
    return out


def write_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; an artifact is read by the service, often as another user.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o644 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        # Leave no partial file behind; the original error is what the caller needs to see.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
