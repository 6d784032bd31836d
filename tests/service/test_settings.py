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


def test_the_literal_choices_are_the_runtimes_own() -> None:
    from typing import get_args

    from vitserve.runtime.artifact import PRECISIONS
    from vitserve.runtime.spin import SPIN_MODES

    fields = Settings.model_fields
    assert get_args(fields["precision"].annotation) == ("auto", *PRECISIONS)
    assert get_args(fields["ort_spin"].annotation) == SPIN_MODES


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"VITSERVE_PORT": "70000"}, "VITSERVE_PORT must be <= 65535, got 70000"),
        ({"VITSERVE_PORT": "eighty"}, "VITSERVE_PORT must be an integer, not 'eighty'"),
        ({"VITSERVE_PRECISION": "bf16"}, "VITSERVE_PRECISION must be auto, fp32, fp16 or int8, not 'bf16'"),
        ({"VITSERVE_ACCESS_LOG": "2"}, "VITSERVE_ACCESS_LOG must be 0 or 1, got '2'"),
        ({"VITSERVE_SHARE_WEIGHTS": "yes"}, "VITSERVE_SHARE_WEIGHTS must be 0 or 1, got 'yes'"),
        ({"VITSERVE_MODEL_DIR": "/no/such/dir"}, "VITSERVE_MODEL_DIR /no/such/dir is not a directory"),
        ({"VITSERVE_EXPLAIN_THREADS": "0"}, "VITSERVE_EXPLAIN_THREADS must be >= 1, got 0"),
        (
            {"VITSERVE_BODY_TIMEOUT_S": "90"},
            "VITSERVE_BODY_TIMEOUT_S (90) must be below VITSERVE_REQUEST_TIMEOUT_S (60)",
        ),
    ],
)
def test_a_bad_variable_is_refused_with_its_name(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ)
    assert str(raised.value) == message


def test_empty_variables_are_unset_and_settings_are_frozen() -> None:
    settings = Settings.from_env(
        {"VITSERVE_PORT": "", "VITSERVE_ACCESS_LOG": "0", "VITSERVE_SHARE_WEIGHTS": "0"}
    )
    assert settings.port == 3000 and settings.access_log is False and settings.share_weights is False
    assert Settings.from_env({}).share_weights is True
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_the_grpc_port_defaults_to_tritons_and_0_turns_it_off() -> None:
    assert Settings.from_env({}).grpc_port == 8001
    assert Settings.from_env({"VITSERVE_GRPC_PORT": "0"}).grpc_port == 0
    with pytest.raises(SettingsError, match="VITSERVE_GRPC_PORT must be <= 65535, got 70000"):
        Settings.from_env({"VITSERVE_GRPC_PORT": "70000"})
    with pytest.raises(SettingsError, match="VITSERVE_GRPC_PORT must differ from VITSERVE_PORT"):
        Settings.from_env({"VITSERVE_GRPC_PORT": "3000"})
