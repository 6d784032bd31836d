"""service/settings.py: the decoding pool's and ONNX Runtime's thread counts, chosen from the CPU budget
unless set; batch runners."""

from __future__ import annotations

import pytest

from vitserve.service.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("cpus", "api_workers", "threads"),
    [
        (1, 1, 1),  # never none
        (2, 1, 1),  # one core for the event loop, one for decoding
        (4, 1, 3),
        (16, 14, 1),  # the GPU box: many workers, each with one
        (16, 2, 7),
        (64, 1, 8),  # capped: beyond a few threads they only wait for the GIL
    ],
)
def test_the_default_pool_leaves_a_core_per_worker_to_its_event_loop(
    cpus: int, api_workers: int, threads: int
) -> None:
    settings = Settings.from_env({"VITSERVE_API_WORKERS": str(api_workers)})
    assert settings.decode_threads == 0
    assert settings.decode_pool_size(cpus) == threads


def test_a_set_pool_size_is_kept_whatever_the_machine() -> None:
    settings = Settings.from_env({"VITSERVE_DECODE_THREADS": "4"})
    assert [settings.decode_pool_size(cpus) for cpus in (1, 2, 64)] == [4, 4, 4]


def test_a_negative_pool_size_is_refused() -> None:
    with pytest.raises(SettingsError, match="VITSERVE_DECODE_THREADS must be >= 0"):
        Settings.from_env({"VITSERVE_DECODE_THREADS": "-1"})


def test_negative_batch_runners_are_refused() -> None:
    with pytest.raises(SettingsError, match="VITSERVE_BATCH_RUNNERS must be >= 0"):
        Settings.from_env({"VITSERVE_BATCH_RUNNERS": "-1"})


@pytest.mark.parametrize(
    ("cpus", "runners", "threads"),
    [(2, 1, 2), (2, 2, 1), (1, 2, 1), (16, 4, 4)],
)
def test_intra_op_threads_share_the_cpus_among_the_batch_runners(
    cpus: int, runners: int, threads: int
) -> None:
    assert Settings.from_env({}).intra_op_pool_size(cpus, runners) == threads


def test_set_intra_op_threads_are_kept_whatever_the_runners() -> None:
    settings = Settings.from_env({"VITSERVE_INTRA_OP_THREADS": "3"})
    assert [settings.intra_op_pool_size(cpus, 2) for cpus in (1, 2, 64)] == [3, 3, 3]


def test_the_shed_delay_defaults_to_a_second_and_refuses_negatives() -> None:
    assert Settings.from_env({}).shed_delay_ms == 1000
    assert Settings.from_env({"VITSERVE_SHED_DELAY_MS": "0"}).shed_delay_ms == 0
    with pytest.raises(SettingsError, match="VITSERVE_SHED_DELAY_MS must be >= 0"):
        Settings.from_env({"VITSERVE_SHED_DELAY_MS": "-5"})


def test_the_grpc_port_defaults_to_tritons_and_0_turns_it_off() -> None:
    assert Settings.from_env({}).grpc_port == 8001
    assert Settings.from_env({"VITSERVE_GRPC_PORT": "0"}).grpc_port == 0
    with pytest.raises(SettingsError, match="VITSERVE_GRPC_PORT must be 0 \\(off\\) to 65535"):
        Settings.from_env({"VITSERVE_GRPC_PORT": "70000"})
    with pytest.raises(SettingsError, match="VITSERVE_GRPC_PORT must differ from VITSERVE_PORT"):
        Settings.from_env({"VITSERVE_GRPC_PORT": "3000"})
