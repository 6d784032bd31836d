"""The explanation artifact (`model.explain.onnx`) and the ONNX Runtime session that runs it.

The serving artifact fuses each block's attention into one node, so its attention weights never
exist as a tensor. The explanation artifact is the same weights exported through the manual
attention path, with a second output: every layer's attention probabilities. `vitserve export`
writes it beside model.onnx and checks that its logits match the fused graph's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vitserve.runtime.artifact import (
    ARTIFACT_FILES,
    EXPLAIN,
    INPUT_NAME,
    OUTPUT_NAME,
    ArtifactMetadata,
    metadata_from_props,
)
from vitserve.runtime.session import CPU

log = logging.getLogger(__name__)

EXPLAIN_FILE = ARTIFACT_FILES[EXPLAIN]
ATTENTIONS_NAME = "attentions"  # float32 (N, layers, heads, tokens, tokens), rows sum to 1
# ArtifactMetadata.extra[ROLE_KEY] == EXPLANATION_ROLE marks the artifact; classifiers never load it.
ROLE_KEY = "artifact_role"
EXPLANATION_ROLE = "explanation"


class ExplainArtifactError(RuntimeError):
    """No usable explanation artifact: missing, not marked as one, or without attention outputs."""


@dataclass(frozen=True)
class Explained:
    """One image's logits (C,) and attention probabilities (layers, heads, tokens, tokens)."""

    logits: np.ndarray
    attentions: np.ndarray


class ExplainSession:
    """An ORT session over model.explain.onnx; `explain` takes one uint8 (H, W, 3) image.

    CPU only and few threads by default: it runs in the API worker's thread pool, never in the
    batcher's model thread, so an explanation cannot hold up a classification batch.
    """

    def __init__(self, model_dir: Path, intra_op_threads: int = 1) -> None:
        self.path = model_dir / EXPLAIN_FILE
        if not self.path.is_file():
            raise ExplainArtifactError(
                f"no {EXPLAIN_FILE} in {model_dir}; rerun `vitserve export` (it writes one beside model.onnx)"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=[CPU])
        except Exception as exc:  # ORT raises one unrelated class per status
            raise ExplainArtifactError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: ArtifactMetadata = metadata_from_props(props, self.path)
        if self.metadata.extra.get(ROLE_KEY) != EXPLANATION_ROLE:
            raise ExplainArtifactError(f"{self.path} is not marked as an explanation artifact")
        outputs = {o.name for o in self.session.get_outputs()}
        if {OUTPUT_NAME, ATTENTIONS_NAME} - outputs:
            raise ExplainArtifactError(
                f"{self.path} lacks the outputs {OUTPUT_NAME!r} and {ATTENTIONS_NAME!r}"
            )
        size = self.metadata.preprocessing.image_size
        self.input_shape = (size, size, 3)
        log.info("loaded explanation artifact %s", self.path)

    def explain(self, pixels: np.ndarray) -> Explained:
        """(H, W, 3) uint8 -> logits and per-layer attention probabilities of that image."""
        if pixels.dtype != np.uint8 or pixels.shape != self.input_shape:
            raise ValueError(f"expected uint8 {self.input_shape}, got {pixels.dtype} {pixels.shape}")
        logits, attentions = self.session.run([OUTPUT_NAME, ATTENTIONS_NAME], {INPUT_NAME: pixels[None]})
        return Explained(np.asarray(logits[0], np.float32), np.asarray(attentions[0], np.float32))
