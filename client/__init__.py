"""The vitserve client SDK: classify images with a running vitserve server, or score whole folders.

    from vitserve.client import Client

    with Client("http://127.0.0.1:3000") as client:
        prediction = client.classify("digit.png", top_k=3)
        summary = client.score_folder("photos/", "results.jsonl")
        client.score_folder("s3://bucket/photos", "s3://bucket/scores/", shard="3/16")
    merge_results("s3://bucket/scores/", "scores.jsonl")  # every shard, one file, sorted by path

`AsyncClient` has the same methods as coroutines. Needs httpx only (Pillow only to send PIL images,
the s3/gcs/azure extras only for object storage); all errors derive from VitserveError (see
vitserve.client.errors).
"""

from vitserve.client.aio import AsyncClient
from vitserve.client.errors import (
    ConnectionFailed,
    InvalidImage,
    InvalidRequest,
    ResultsFileError,
    ServerError,
    ServiceOverloaded,
    StorageError,
    Timeout,
    VitserveError,
)
from vitserve.client.merge import MergeSummary, merge_results
from vitserve.client.results import ModelInfo, ModelRef, Prediction, TopK
from vitserve.client.scoring import Progress, ScoreOptions, ScoreSummary
from vitserve.client.sharding import Shard
from vitserve.client.sync import Client

__all__ = [
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
