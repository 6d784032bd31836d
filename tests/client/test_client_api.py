"""The public API of vitserve.client, pinned: changing it must be a deliberate edit of this test."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import vitserve.client as sdk
from vitserve.client import errors


def test_all_is_pinned() -> None:
    assert sdk.__all__ == [
        "AsyncClient",
        "Client",
        "ConnectionFailed",
        "InvalidImage",
        "InvalidRequest",
        "MergeSummary",
        "ModelInfo",
        "ModelRef",
        "Prediction",
        "Progress",
        "ResultsFileError",
        "ScoreOptions",
        "ScoreSummary",
        "ServerError",
        "ServiceOverloaded",
        "Shard",
        "StorageError",
        "Timeout",
        "TopK",
        "VitserveError",
        "merge_results",
    ]
    for name in sdk.__all__:
        assert getattr(sdk, name).__doc__, f"{name} has no docstring"


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    methods = ["classify", "classify_many", "model_info", "ready", "score_folder"]
    for name in methods:
        sync, aio = getattr(sdk.Client, name), getattr(sdk.AsyncClient, name)
        assert not inspect.iscoroutinefunction(sync) and inspect.iscoroutinefunction(aio), name
        assert inspect.signature(sync) == inspect.signature(aio), name
    assert inspect.signature(sdk.Client) == inspect.signature(sdk.AsyncClient)
    assert list(inspect.signature(sdk.Client).parameters) == [
        "base_url",
        "timeout",
        "retries",
        "backoff",
        "max_backoff",
        "headers",
    ]
    assert list(inspect.signature(sdk.Client.score_folder).parameters) == ["self", "root", "out", "options"]
    # score_folder's keyword options, declared once for both clients (and type-checked by mypy).
    assert list(typing.get_type_hints(sdk.ScoreOptions)) == [
        "extensions",
        "concurrency",
        "batch_size",
        "top_k",
        "progress",
        "shard",
        "commit_rows",
        "commit_interval_s",
    ]
    assert hasattr(sdk.Client, "__enter__") and hasattr(sdk.Client, "close")
    assert hasattr(sdk.AsyncClient, "__aenter__") and hasattr(sdk.AsyncClient, "aclose")


def test_results_are_frozen_dataclasses() -> None:
    for kind, fields in [
        (sdk.Prediction, ["label", "score", "top_k", "model"]),
        (sdk.TopK, ["label", "index", "score"]),
        (sdk.ModelRef, ["name", "version"]),
        (sdk.ModelInfo, ["name", "version", "labels", "input_size", "precision", "providers", "extra"]),
        (sdk.ScoreSummary, ["output", "scored", "failed", "skipped", "failed_before", "elapsed_s"]),
        (sdk.Progress, ["total", "skipped", "scored", "failed", "elapsed_s"]),
        (sdk.Shard, ["index", "count"]),
        (sdk.MergeSummary, ["output", "shards", "rows", "failed"]),
    ]:
        assert dataclasses.is_dataclass(kind) and getattr(kind, "__dataclass_params__").frozen, kind  # noqa: B009
        assert [f.name for f in dataclasses.fields(kind)] == fields


def test_one_exception_tree_in_one_module() -> None:
    tree = {
        "ConnectionFailed": "VitserveError",
        "Timeout": "VitserveError",
        "ServiceOverloaded": "VitserveError",
        "InvalidRequest": "VitserveError",
        "InvalidImage": "InvalidRequest",
        "ServerError": "VitserveError",
        "ResultsFileError": "VitserveError",
        "StorageError": "VitserveError",
    }
    for name, parent in tree.items():
        kind = getattr(sdk, name)
        assert kind.__module__ == errors.__name__ == "vitserve.client.errors"
        assert kind.__bases__ == (getattr(sdk, parent),)
        assert name in (errors.__doc__ or "")  # documented in the module's tree
    assert sdk.VitserveError.__bases__ == (Exception,)


def test_score_folder_refuses_an_option_it_does_not_have(tmp_path: typing.Any) -> None:
    """The options are keywords of one declaration: a misspelt one fails at once, before any request."""
    with sdk.Client("http://127.0.0.1:9") as client:
        try:
            client.score_folder(tmp_path, tmp_path / "out.jsonl", concurrencyy=2)  # type: ignore[call-arg]
        except TypeError as exc:
            assert "concurrencyy" in str(exc)
        else:
            raise AssertionError("an unknown option was accepted")
