"""The thread switch interval follows the model unless VITSERVE_GIL_SWITCH_US sets it."""

from __future__ import annotations

import sys

import pytest

from vitserve.service.model.gil import PYTHON_SWITCH_US, SHORT_SWITCH_US, follow_the_model, switch_interval_us


@pytest.mark.parametrize(
    ("setting_us", "batch_one_ms", "expected"),
    [
        (0, 0.9, SHORT_SWITCH_US),  # the digits model: the loop and decoding are the cost
        (0, 25.0, PYTHON_SWITCH_US),  # ViT-Ti/16 on 2 cores: ONNX Runtime is the cost
        (0, None, PYTHON_SWITCH_US),  # nothing measured: Python's own
        (2000, 0.9, 2000),  # set: kept, whatever the model
        (2000, 25.0, 2000),
    ],
)
def test_the_interval(setting_us: int, batch_one_ms: float | None, expected: int) -> None:
    assert switch_interval_us(setting_us, batch_one_ms) == expected


def test_it_is_applied_to_this_process() -> None:
    before = sys.getswitchinterval()
    try:
        assert follow_the_model(0, {"batch_one_ms": 1.2}) == SHORT_SWITCH_US
        assert sys.getswitchinterval() == pytest.approx(SHORT_SWITCH_US / 1e6)
        assert follow_the_model(0, {"providers": ["CPUExecutionProvider"]}) == PYTHON_SWITCH_US
        assert sys.getswitchinterval() == pytest.approx(PYTHON_SWITCH_US / 1e6)
    finally:
        sys.setswitchinterval(before)
