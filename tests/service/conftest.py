"""A real model and flow for the tests that drive the classify flow without a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import DEFAULT_MODEL_DIR
from vitserve.runtime.decode import DecodeLimits
from vitserve.service.flow.admission import Admission
from vitserve.service.flow.classify import ClassifyFlow
from vitserve.service.model.local import LocalModel
from vitserve.service.observe.metrics import ServiceMetrics
from vitserve.service.settings import Settings

# FP32: an image's scores do not depend on its batch-mates, so answers compare exactly to one-by-one runs.
SETTINGS = Settings(model_dir=DEFAULT_MODEL_DIR, precision="fp32", device="cpu", intra_op_threads=1)


class Gauge:
    """Admission's in-flight gauge, kept as a plain number to read back, with the highest it reached."""

    def __init__(self) -> None:
        self.value = 0
        self.peak = 0

    def inc(self, n: int = 1) -> None:
        self.value += n
        self.peak = max(self.peak, self.value)

    def dec(self, n: int = 1) -> None:
        self.value -= n


@pytest.fixture(scope="session")
def metrics() -> ServiceMetrics:
    return ServiceMetrics.create()  # once: prometheus_client refuses a second registration


@pytest.fixture(scope="session")
def model(metrics: ServiceMetrics) -> Iterator[LocalModel]:
    model = LocalModel(SETTINGS, observer=metrics)
    yield model
    model.close()


def flow_with(model: LocalModel, metrics: ServiceMetrics, limit: int = 128) -> tuple[ClassifyFlow, Gauge]:
    gauge = Gauge()
    flow = ClassifyFlow(
        model, Admission(limit, gauge), metrics, DecodeLimits(), decode_threads=2, retry_after_s=3
    )
    return flow, gauge
