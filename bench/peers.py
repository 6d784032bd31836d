"""The servers `vitserve bench serve` and `vitserve bench peers` start, and how each is sent the image.

Every server loads the same artifact with runtime/session.py's OnnxClassifier (same ORT options and
thread budget), decodes with runtime/decode.py and answers the top 5 classes; the peers batch the
way their own documentation shows (max batch 32, a ~5 ms window where the batcher takes one):

  vitserve  `vitserve serve`, as shipped (greedy batching, no window)
  vitserve-v2  the same server through the Open Inference Protocol's REST route (`--v2`): the image as
            a BYTES tensor in Triton's binary tensor data extension, the top 5 as the classification
            extension's strings in JSON
  naive     bench/naive_server.py: FastAPI + ORT, one image per request, no batching
  bentoml   bench/peer_bentoml.py: one BentoML service, gallery style (a batchable API)
  litserve  bench/peer_litserve.py: a LitAPI with LitServer's batching
  pytriton  bench/peer_pytriton.py: Triton's dynamic batcher around a Python infer function; the image
            goes as a BYTES tensor in Triton's binary HTTP protocol (a multipart form is not its API)
  ray       bench/peer_ray.py: a Ray Serve deployment with @serve.batch

With `--tritonclient` the Open Inference Protocol is driven by Triton's own async client instead
(bench/triton_client.py: one image as a BYTES tensor, the top 5 through the classification extension)
on vitserve's v2 REST and gRPC routes and on PyTriton's, beside vitserve's /classify under wrk and,
as the control for the client's own cost, under aiohttp in the same loop.

The peers need `pip install 'vitserve[peers]'`; one that is missing is reported, not skipped.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vitserve.bench.serve import CLASSIFY_CONTROL, BenchConfig, LoadClient, Server, ServerSpec
from vitserve.bench.wrk import Upload, WrkResult

PEER_MODULES = {  # peer -> the module it needs
    "bentoml": "bentoml",
    "litserve": "litserve",
    "pytriton": "pytriton",
    "ray": "ray.serve",
}


def multipart(data: bytes, media_type: str) -> Upload:
    suffix = media_type.split("/")[-1]
    return Upload.multipart("image", f"image.{suffix}", data, media_type)


def triton_binary(data: bytes, media_type: str) -> Upload:
    """KServe v2 inference request with the binary-data extension: JSON header, then the raw tensor."""
    tensor = struct.pack("<I", len(data)) + data  # a BYTES element is length-prefixed
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [{"name": "top_k", "parameters": {"binary_data": False}}],
        }
    ).encode()
    return Upload(
        header + tensor,
        "application/octet-stream",
        extra_headers=(("Inference-Header-Content-Length", str(len(header))),),
    )


def v2_binary(data: bytes, media_type: str) -> Upload:
    """vitserve's v2 infer request for one encoded image, answered with the top 5 classes (as /classify)."""
    tensor = struct.pack("<I", len(data)) + data
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 5, "binary_data": False}}],
        }
    ).encode()
    return Upload(
        header + tensor,
        "application/octet-stream",
        extra_headers=(("Inference-Header-Content-Length", str(len(header))),),
    )


def v2_infer_path(model_dir: Path) -> str:
    from vitserve.runtime.artifact import read_metadata

    return f"/v2/models/{read_metadata(model_dir / 'model.onnx').model_name}/infer"


def _common_args(model_dir: Path, port: int, config: BenchConfig) -> list[str]:
    return [
        *("--model-dir", str(model_dir), "--port", str(port), "--threads", str(config.threads)),
        *("--precision", config.precision, "--max-batch-size", str(config.max_batch_size)),
        *("--batch-wait-ms", str(config.batch_wait_ms)),
    ]


def _vitserve_env(model_dir: Path, config: BenchConfig) -> dict[str, str]:
    # No VITSERVE_INTRA_OP_THREADS: vitserve lays its threads out from the CPUs it has, as when served
    # (service/model/local.py); the others get `threads` ORT threads, the machine's cores by default.
    return {
        "VITSERVE_MAX_BATCH_SIZE": str(config.max_batch_size),
        "VITSERVE_PRECISION": config.precision,
        "VITSERVE_DEVICE": "cpu",
    }


VITSERVE = ServerSpec(
    name="vitserve",
    command=lambda model_dir, port, config: [
        *(sys.executable, "-m", "vitserve", "serve", "--model-dir", str(model_dir), "--port", str(port))
    ],
    env=_vitserve_env,
    ready_path="/readyz",
    classify_path="/classify",
    upload=multipart,
)


VITSERVE_V2 = ServerSpec(
    name="vitserve-v2",
    command=VITSERVE.command,
    env=lambda model_dir, config: {**_vitserve_env(model_dir, config), "VITSERVE_GRPC_PORT": "0"},
    ready_path="/v2/health/ready",
    classify_path="/v2/models/{name}/infer",
    model_path=v2_infer_path,
    upload=v2_binary,
)


def vitserve_variant(spec: str) -> ServerSpec:
    """`LABEL:VAR=VALUE,VAR=VALUE` -> vitserve with those VITSERVE_* settings, named vitserve[LABEL]."""
    label, _, assignments = spec.partition(":")
    extra = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
    if not label or not extra or not all(k.startswith("VITSERVE_") for k in extra):
        raise ValueError(f"expected LABEL:VITSERVE_X=1[,VITSERVE_Y=2], got {spec!r}")
    return ServerSpec(
        name=f"vitserve[{label}]",
        command=VITSERVE.command,
        env=lambda model_dir, config: {**_vitserve_env(model_dir, config), **extra},
        ready_path=VITSERVE.ready_path,
        classify_path=VITSERVE.classify_path,
        upload=VITSERVE.upload,
    )


NAIVE = ServerSpec(
    name="naive",
    command=lambda model_dir, port, config: [
        *(sys.executable, "-m", "vitserve.bench.naive_server", "--model-dir", str(model_dir)),
        *("--port", str(port), "--threads", str(config.threads), "--precision", config.precision),
    ],
    ready_path="/readyz",
    classify_path="/classify",
    upload=multipart,
)


def _peer(
    name: str, ready_path: str, classify_path: str, upload: Callable[[bytes, str], Upload]
) -> ServerSpec:
    """A peer started as `python -m vitserve.bench.peer_NAME` with the benchmark's arguments."""
    module = f"vitserve.bench.peer_{name}"
    return ServerSpec(
        name=name,
        command=lambda model_dir, port, config: [
            sys.executable,
            "-m",
            module,
            *_common_args(model_dir, port, config),
        ],
        ready_path=ready_path,
        classify_path=classify_path,
        upload=upload,
    )


PEERS = {
    "bentoml": _peer("bentoml", "/readyz", "/classify", multipart),
    "litserve": _peer("litserve", "/health", "/predict", multipart),
    "pytriton": _peer(
        "pytriton", "/v2/models/classifier/ready", "/v2/models/classifier/infer", triton_binary
    ),
    "ray": _peer("ray", "/classify", "/classify", multipart),  # GET /classify: the replica is up
}


def available(names: list[str]) -> tuple[list[ServerSpec], dict[str, str]]:
    """The peers that can run here, and why each other one cannot."""
    specs, missing = [], {}
    for name in names:
        module = PEER_MODULES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            specs.append(PEERS[name])
        else:
            missing[name] = f"not installed ({module} is missing: pip install 'vitserve[peers]')"
    return specs, missing


def raw_image(data: bytes, media_type: str) -> Upload:
    """The image as it is: Triton's client builds each request from it."""
    return Upload(data, media_type)


# gRPC calls in flight per connection: one connection carrying 64 calls leaves its server accepting
# them one at a time (docs/benchmarks.md, "Triton's gRPC client on one connection per 8 calls").
CALLS_PER_CHANNEL = 8


def triton_client(protocol: str, shape: tuple[int, ...]) -> LoadClient:
    """Triton's async `protocol` client (http or grpc), sending one image as a BYTES tensor of `shape`;
    for `classify`, the control: aiohttp posting the upload to /classify."""

    def load(server: Server, upload: Upload, concurrency: int, duration_s: float) -> WrkResult:
        from vitserve.bench.triton_client import run_triton_client

        port = server.grpc_port if protocol == "grpc" else server.port
        # /v2/models/{name}/infer; the control posts to /classify
        model = server.classify_path.split("/")[3] if protocol != "classify" else ""
        return run_triton_client(
            protocol,
            f"127.0.0.1:{port}",
            model,
            upload.body,
            shape,
            concurrency,
            duration_s,
            channels=-(-concurrency // CALLS_PER_CHANNEL),
            content_type=upload.content_type,
        )

    return load


def _through_triton_client(spec: ServerSpec, name: str, protocol: str, shape: tuple[int, ...]) -> ServerSpec:
    return replace(
        spec,
        name=name,
        upload=raw_image,
        client=triton_client(protocol, shape),
        generator=f"tritonclient.{protocol}.aio",
    )


# PyTriton's model batches, so a request's tensor has a batch dimension before the model's [1].
TRITONCLIENT_VITSERVE = [
    _through_triton_client(VITSERVE_V2, "vitserve v2 REST", "http", (1,)),
    replace(
        _through_triton_client(VITSERVE_V2, "vitserve v2 gRPC", "grpc", (1,)),
        grpc_listen=lambda port: ((), {"VITSERVE_GRPC_PORT": str(port)}),
    ),
]
# /classify under a Python client of like cost (aiohttp, the library under tritonclient.http.aio).
CLASSIFY_AIOHTTP = replace(
    VITSERVE, name=CLASSIFY_CONTROL, client=triton_client("classify", (1,)), generator="aiohttp"
)
TRITONCLIENT_PYTRITON = [
    _through_triton_client(PEERS["pytriton"], "pytriton v2 REST", "http", (1, 1)),
    replace(
        _through_triton_client(PEERS["pytriton"], "pytriton v2 gRPC", "grpc", (1, 1)),
        grpc_listen=lambda port: (("--grpc-port", str(port)), {}),
    ),
]


def tritonclient_systems() -> tuple[list[ServerSpec], dict[str, str]]:
    """vitserve's and PyTriton's v2 routes under Triton's client, and why any cannot run here."""
    specs, missing = [], {}
    if importlib.util.find_spec("tritonclient") is None:
        why = "not installed (tritonclient is missing: pip install 'tritonclient[http,grpc]')"
        systems = [CLASSIFY_AIOHTTP, *TRITONCLIENT_VITSERVE, *TRITONCLIENT_PYTRITON]
        return [], {s.name: why for s in systems}
    specs += [CLASSIFY_AIOHTTP, *TRITONCLIENT_VITSERVE]
    pytriton, unavailable = available(["pytriton"])
    if pytriton:
        specs += TRITONCLIENT_PYTRITON
    else:
        missing.update({s.name: unavailable["pytriton"] for s in TRITONCLIENT_PYTRITON})
    return specs, missing
