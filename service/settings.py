"""The service's one settings object, read from `VITSERVE_*` environment variables and validated once.

Bad settings fail at start-up with a message naming the variable, never at the first request. The
fields are typed and ranged with pydantic (which BentoML and FastAPI already bring); `from_env` reads
any mapping, not only os.environ, because `vitserve serve` validates the environment it is about to
hand BentoML before it execs, which pydantic-settings' environment source (os.environ only) cannot.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import vitserve.models

PREFIX = "VITSERVE_"
# The API service's name in BentoML (service/app.py), and so its workers' `--service-name`.
API_SERVICE_NAME = "vitserve"
DEFAULT_MODEL_DIR = Path(vitserve.models.__file__).parent / "digits-vit"


Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]


class SettingsError(ValueError):
    """A VITSERVE_* variable is malformed or out of range."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_dir: Path = DEFAULT_MODEL_DIR
    # auto: fp16 on a GPU, int8 where the artifact has one (else fp32) on the CPU.
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    # The Open Inference Protocol's gRPC service listens here, in each API worker (Triton's default
    # port); 0 turns it off. The v2 REST routes are always on `port`.
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 8001
    # Largest batch the batcher forms; on the CPU larger batches buy no throughput (docs/benchmarks.md).
    max_batch_size: Positive = 32
    # A deadline, not a batching window: images still queued after it get 503 deadline_exceeded. It
    # must exceed the slowest full batch, else healthy load gets 503s.
    max_latency_ms: Positive = 10_000
    # How long an image that finds the model idle may wait for company before its batch runs. 0 (the
    # default): it runs at once; images arriving while a batch runs ride in the next one anyway
    # (runtime/batcher.py), which fills batches under load with no added latency.
    batch_wait_ms: NonNegative = 0
    # Images admitted per API worker before new requests are shed with 429 + Retry-After.
    max_in_flight: Positive = 128
    max_body_bytes: Positive = 20 * 1024 * 1024
    max_pixels: Positive = 40_000_000
    max_batch_images: Positive = 64  # images in one /classify_batch request
    default_top_k: Positive = 5
    retry_after_s: NonNegative = 1
    # How long a request shed for overload (429) waits before its answer goes out. A client that resends
    # at once (a fleet ignoring Retry-After, a proxy retrying 429s) then costs the event loop one refusal
    # per connection per this long instead of thousands a second, and admitted images keep the loop.
    # Keep it below clients' timeouts; 0 answers at once. docs/reliability.md has the measurements.
    shed_delay_ms: NonNegative = 1000
    api_workers: Positive = 1  # processes that parse and decode requests
    # Decoding threads per API worker. 0 (the default): the worker's share of the CPU budget less one
    # core, which the event loop needs for HTTP and answers; at least 1, at most 8 (`decode_pool_size`).
    decode_threads: NonNegative = 0
    # Batches the model may run at once, each in a thread of its own on the one session
    # (runtime/batcher.py). 0 (the default): chosen at start-up from what a batch of one costs
    # (service/model/local.py): one single-threaded runner per CPU for a costly model on the CPU, else one.
    batch_runners: NonNegative = 0
    # ONNX Runtime threads per run; 0 = the container's CPU budget shared among the batch runners.
    intra_op_threads: NonNegative = 0
    # How ONNX Runtime's threads wait for work: never (sleep), run (spin inside a run only), always
    # (ORT's default: also a while after each run). runtime/spin.py says what each cost.
    ort_spin: Literal["never", "run", "always"] = "never"
    # 1 writes one access-log line per classify request (BentoML's format); 0 leaves them to the
    # vitserve_requests_total / vitserve_request_seconds metrics.
    access_log: bool = True
    # 1: a costly CPU model's two sessions (runners' and alone) read one copy of the weights
    # (runtime/shared_weights.py); 0: each holds its own copy.
    share_weights: bool = True
    # The interpreter's thread switch interval in µs (sys.setswitchinterval). 0 (the default): 500 µs
    # when the model runs a batch of one in under 2 ms, else Python's 5,000 (service/model/gil.py says why).
    gil_switch_us: NonNegative = 0
    request_timeout_s: Positive = 60
    # A request body must arrive within this many seconds, else 408. Without it a client trickling
    # bytes held its connection until BentoML's request timeout answered 504, a 5xx for a client fault.
    # 20 MiB at 1 MB/s fits; keep it below request_timeout_s.
    body_timeout_s: Positive = 30
    # An idle keep-alive connection is closed after this. Keep it above the idle timeout of whatever
    # proxies to the service (AWS ALB: 60 s): when the server closes first, a request the proxy sends
    # on a connection the server is just closing fails (uvicorn's default is 5 s).
    keep_alive_s: Positive = 75
    # After SIGTERM an API worker fails readiness but keeps serving this long before it stops
    # accepting. 0 suits Kubernetes, whose preStop sleep (deploy/k8s) already covers endpoint removal;
    # behind a load balancer that only polls /readyz, set it above the probe period x failure threshold.
    shutdown_delay_s: NonNegative = 0
    # ONNX Runtime threads for one /explain: one keeps it from competing with the classify batches for
    # every core (docs/explain.md).
    explain_threads: Positive = 1
    # Explanations queued behind the running one per API worker before new ones get 429.
    explain_max_waiting: NonNegative = 8

    @field_validator("model_dir")
    @classmethod
    def _a_directory(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @field_validator("access_log", "share_weights", mode="before")
    @classmethod
    def _zero_or_one(cls, value: object) -> object:
        if value not in (0, 1, "0", "1", True, False):
            raise ValueError(f"must be 0 or 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.body_timeout_s >= self.request_timeout_s:
            raise ValueError(
                f"{PREFIX}BODY_TIMEOUT_S ({self.body_timeout_s}) must be below "
                f"{PREFIX}REQUEST_TIMEOUT_S ({self.request_timeout_s})"
            )
        if self.grpc_port == self.port:
            raise ValueError(f"{PREFIX}GRPC_PORT must differ from {PREFIX}PORT ({self.port})")
        return self

    def decode_pool_size(self, cpus: int) -> int:
        """Decoding threads per API worker on a machine (or container) of `cpus` CPUs.

        More threads than cores only take turns: Pillow releases the GIL while it decodes, but the
        rest of a decode (the digit normalisation, NumPy on small arrays) holds it, and every extra
        thread is one more waiting for it beside the event loop (docs/benchmarks.md, "Decoding
        threads").
        """
        if self.decode_threads:
            return self.decode_threads
        return max(1, min(8, cpus // self.api_workers - 1))

    def intra_op_pool_size(self, cpus: int, runners: int) -> int:
        """ONNX Runtime threads per run on a machine (or container) of `cpus` CPUs: as set, or the
        CPUs shared among the batch runners, each of which runs on the session at once."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, cpus // runners)

    @property
    def model_socket(self) -> Path:
        """Where the model server listens when there are several API workers (one per port)."""
        return Path(tempfile.gettempdir()) / f"vitserve-{self.port}" / "model.sock"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings that `environ` (default: os.environ) sets; empty variables count as unset."""
        environ = os.environ if environ is None else environ
        values = {
            name: raw
            for name in cls.model_fields
            if (raw := environ.get(PREFIX + name.upper())) not in (None, "")
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from exc


def _explain(exc: ValidationError) -> str:
    """pydantic's errors, each naming the variable: `VITSERVE_PORT must be <= 65535, got 70000`."""
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # a rule between two settings, whose message names both
            lines.append(error["msg"].removeprefix("Value error, "))
            continue
        name = f"{PREFIX}{str(error['loc'][0]).upper()}"
        context = error.get("ctx", {})
        if error["type"] in ("greater_than_equal", "less_than_equal"):
            bound = ">=" if error["type"] == "greater_than_equal" else "<="
            limit = context["ge"] if bound == ">=" else context["le"]
            lines.append(f"{name} must be {bound} {limit}, got {error['input']}")
        elif error["type"] == "literal_error":
            lines.append(f"{name} must be {context['expected'].replace(chr(39), '')}, not {error['input']!r}")
        elif error["type"] in ("int_parsing", "int_from_float"):
            lines.append(f"{name} must be an integer, not {error['input']!r}")
        elif error["type"] == "value_error":
            lines.append(f"{name} {context.get('error', error['msg'])}")
        else:
            lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)
