"""How LocalModel lays the model out on the CPUs: batch runners chosen from a timed batch of one."""

from __future__ import annotations

import pytest

from tests.support import DEFAULT_MODEL_DIR
from vitserve.runtime.cpus import cpu_budget
from vitserve.service.gil import CHEAP_MODEL_MS
from vitserve.service.model import LocalModel, runners_for
from vitserve.service.settings import Settings


@pytest.mark.parametrize(
    ("probe_ms", "cpus", "per_run", "runners"),
    [
        (CHEAP_MODEL_MS / 2, 2, 1, 1),  # cheap: the loop is the cost, one runner
        (CHEAP_MODEL_MS, 2, 1, 2),  # costly: a single-threaded runner per CPU
        (25.0, 16, 1, 16),
        (25.0, 16, 4, 4),  # VITSERVE_INTRA_OP_THREADS=4: runners of 4 threads
        (25.0, 3, 2, 1),
    ],
)
def test_runners_follow_the_cost_of_a_batch_of_one(
    probe_ms: float, cpus: int, per_run: int, runners: int
) -> None:
    assert runners_for(probe_ms, cpus, per_run) == runners


def test_by_default_the_runners_are_chosen_by_the_rule_from_what_the_probe_measured() -> None:
    cpus = cpu_budget()
    model = LocalModel(Settings(model_dir=DEFAULT_MODEL_DIR, device="cpu"))
    try:
        info = model.info()
    finally:
        model.close()
    if cpus < 2:
        assert (info["runners_probe_ms"], info["batch_runners"], info["intra_op_threads"]) == (None, 1, 1)
        return
    probe_ms = info["runners_probe_ms"]
    assert isinstance(probe_ms, float) and probe_ms > 0
    runners = runners_for(probe_ms, cpus, 1)
    assert info["batch_runners"] == runners
    # A runner per CPU runs single-threaded; one runner gets every CPU.
    assert info["intra_op_threads"] == (1 if runners > 1 else cpus)


def test_set_runners_are_kept_and_share_the_cpus() -> None:
    cpus = cpu_budget()
    model = LocalModel(Settings(model_dir=DEFAULT_MODEL_DIR, device="cpu", batch_runners=2, max_batch_size=8))
    try:
        info = model.info()
        assert model.batcher.run_size == 4
    finally:
        model.close()
    assert (info["batch_runners"], info["intra_op_threads"], info["runners_probe_ms"]) == (
        2,
        max(1, cpus // 2),
        None,
    )
