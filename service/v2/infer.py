"""A checked v2 request through the classify flow, the same admission, decoding and batches as /classify."""

from __future__ import annotations

import numpy as np

from vitserve.service.flow.classify import ClassifyFlow, ItemResult
from vitserve.service.flow.errors import ApiError
from vitserve.service.v2.errors import from_api_error
from vitserve.service.v2.model import PROBABILITIES_OUTPUT, InferJob
from vitserve.service.v2.tensors import OutputTensor


async def infer(flow: ClassifyFlow, job: InferJob) -> list[OutputTensor]:
    """The job's outputs; a V2Error if any image fails (the first such one is named by its index)."""
    try:
        if job.images is not None:
            results = await flow.classify(job.images, job.top_k)
        else:
            assert job.pixels is not None
            results = await flow.classify_pixels(job.pixels, job.top_k)
    except ApiError as exc:
        raise from_api_error(exc) from exc
    for i, result in enumerate(results):
        if result.error is not None:
            raise from_api_error(result.error, prefix=f"image [{i}]: ") from result.error
    return [_output(output.name, output.classification, results) for output in job.outputs]


def _output(name: str, classification: int, results: list[ItemResult]) -> OutputTensor:
    count = len(results)
    if classification:
        items: list[bytes] = []
        for result in results:
            assert result.prediction is not None
            # Triton's classification extension: "score:index:label", the likeliest first.
            items.extend(
                f"{t.score!r}:{t.index}:{t.label}".encode() for t in result.prediction.top_k[:classification]
            )
        return OutputTensor(name, "BYTES", (count, classification), items)
    rows = [r.probabilities for r in results]
    assert all(row is not None for row in rows)
    probabilities = np.stack(rows).astype(np.float32)  # type: ignore[arg-type]
    return OutputTensor(PROBABILITIES_OUTPUT, "FP32", probabilities.shape, probabilities)
