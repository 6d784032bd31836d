"""The vitserve client SDK: classify images with a running vitserve server, or score whole folders.

    from vitserve.client import Client

    with Client("http://127.0.0.1:3000") as client:
        prediction = client.classify("digit.png", top_k=3)
        summary = client.score_folder("photos/", "results.jsonl")

`AsyncClient` has the same methods as coroutines. Needs httpx only (and Pillow only to send PIL
images); all errors derive from VitserveError (see vitserve.client.errors).
"""

from vitserve.client.aio import AsyncClient
from vitserve.client.errors import (
    ConnectionFailed,
    InvalidImage,
    InvalidRequest,
    ResultsFileError,
    ServerError,
    ServiceOverloaded,
    Timeout,
    VitserveError,
)
from vitserve.client.results import ModelInfo, ModelRef, Prediction, TopK
from vitserve.client.scoring import Progress, ScoreSummary
from vitserve.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ConnectionFailed",
    "InvalidImage",
    "InvalidRequest",
    "ModelInfo",
    "ModelRef",
    "Prediction",
    "Progress",
    "ResultsFileError",
    "ScoreSummary",
    "ServerError",
    "ServiceOverloaded",
    "Timeout",
    "TopK",
    "VitserveError",
]
