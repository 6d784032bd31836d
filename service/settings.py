"""The service's one settings object, read from `VITSERVE_*` environment variables and validated once.

Bad settings fail at start-up with a message naming the variable, never at the first request.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import vitserve.models
from vitserve.runtime.artifact import PRECISIONS
from vitserve.runtime.spin import SPIN_MODES

PREFIX = "VITSERVE_"
DEFAULT_MODEL_DIR = Path(vitserve.models.__file__).parent / "digits-vit"


class SettingsError(ValueError):
    """A VITSERVE_* variable is malformed or out of range."""


@dataclass(frozen=True)
class Settings:
    model_dir: Path = DEFAULT_MODEL_DIR
    precision: str = "auto"  # auto: fp16 on a GPU, int8 (else fp32) on the CPU
    device: str = "auto"  # auto | cuda | cpu
    host: str = "127.0.0.1"
    port: int = 3000
    # The Open Inference Protocol's gRPC service listens here, in each API worker (Triton's default
    # port); 0 turns it off. The v2 REST routes are always on `port`.
    grpc_port: int = 8001
    # Largest batch the batcher forms. On the CPU a batch of 32 digits takes a few ms and a batch of 32
    # ViT-B/16 INT8 images about 2-3 s (docs/benchmarks.md); larger buys no throughput.
    max_batch_size: int = 32
    # A deadline, not a batching window: images still queued after it get 503 deadline_exceeded. It
    # must exceed the slowest full batch, else healthy load gets 503s.
    max_latency_ms: int = 10_000
    # How long an image that finds the model idle may wait for company before its batch runs. 0 (the
    # default): it runs at once; images arriving while a batch runs ride in the next one anyway
    # (runtime/batcher.py), which fills batches under load with no added latency.
    batch_wait_ms: int = 0
    # Images admitted per API worker before new requests are shed with 429 + Retry-After.
    max_in_flight: int = 128
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_batch_images: int = 64  # images in one /classify_batch request
    default_top_k: int = 5
    retry_after_s: int = 1
    # How long a request shed for overload (429) waits before its answer goes out. A client that resends
    # at once (a fleet ignoring Retry-After, a proxy retrying 429s) then costs the event loop one refusal
    # per connection per this long instead of thousands a second, and admitted images keep the loop.
    # Keep it below clients' timeouts; 0 answers at once. docs/reliability.md has the measurements.
    shed_delay_ms: int = 1000
    api_workers: int = 1  # processes that parse and decode requests
    # Decoding threads per API worker. 0 (the default): the worker's share of the CPU budget less one
    # core, which the event loop needs for HTTP and answers; at least 1, at most 8 (`decode_pool_size`).
    decode_threads: int = 0
    # Batches the model may run at once, each in a thread of its own on the one session
    # (runtime/batcher.py). 0 (the default): chosen at start-up from what a batch of one costs
    # (service/model.py): one single-threaded runner per CPU for a costly model on the CPU, else one.
    batch_runners: int = 0
    # ONNX Runtime threads per run; 0 = the container's CPU budget shared among the batch runners.
    intra_op_threads: int = 0
    # How ONNX Runtime's threads wait for work: never (sleep), run (spin inside a run only), always
    # (ORT's default: also a while after each run). runtime/spin.py says what each cost.
    ort_spin: str = "never"
    # 1 writes one access-log line per classify request (BentoML's format); 0 leaves them to the
    # vitserve_requests_total / vitserve_request_seconds metrics.
    access_log: int = 1
    # The interpreter's thread switch interval in µs (sys.setswitchinterval). 0 (the default): 500 µs
    # when the model runs a batch of one in under 2 ms, else Python's 5,000 (service/gil.py says why).
    gil_switch_us: int = 0
    request_timeout_s: int = 60
    # A request body must arrive within this many seconds, else 408. Without it a client trickling
    # bytes held its connection until BentoML's request timeout answered 504, a 5xx for a client fault.
    # 20 MiB at 1 MB/s fits; keep it below request_timeout_s.
    body_timeout_s: int = 30
    # An idle keep-alive connection is closed after this. Keep it above the idle timeout of whatever
    # proxies to the service (AWS ALB: 60 s): when the server closes first, a request the proxy sends
    # on a connection the server is just closing fails (uvicorn's default is 5 s).
    keep_alive_s: int = 75
    # After SIGTERM an API worker fails readiness but keeps serving this long before it stops
    # accepting. 0 suits Kubernetes, whose preStop sleep (deploy/k8s) already covers endpoint removal;
    # behind a load balancer that only polls /readyz, set it above the probe period x failure threshold.
    shutdown_delay_s: int = 0

    def __post_init__(self) -> None:
        if self.precision not in ("auto", *PRECISIONS):
            raise SettingsError(f"{PREFIX}PRECISION must be auto, fp32, fp16 or int8, not {self.precision!r}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise SettingsError(f"{PREFIX}DEVICE must be auto, cuda or cpu, not {self.device!r}")
        if not self.model_dir.is_dir():
            raise SettingsError(f"{PREFIX}MODEL_DIR {self.model_dir} is not a directory")
        for name in (
            "port",
            "max_batch_size",
            "max_latency_ms",
            "max_in_flight",
            "max_body_bytes",
            "max_pixels",
            "max_batch_images",
            "default_top_k",
            "api_workers",
            "request_timeout_s",
            "body_timeout_s",
            "keep_alive_s",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 1, got {getattr(self, name)}")
        if self.ort_spin not in SPIN_MODES:
            raise SettingsError(f"{PREFIX}ORT_SPIN must be {', '.join(SPIN_MODES)}, not {self.ort_spin!r}")
        if self.access_log not in (0, 1):
            raise SettingsError(f"{PREFIX}ACCESS_LOG must be 0 or 1, got {self.access_log}")
        for name in (
            "retry_after_s",
            "shed_delay_ms",
            "intra_op_threads",
            "batch_runners",
            "batch_wait_ms",
            "shutdown_delay_s",
            "gil_switch_us",
            "decode_threads",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 0, got {getattr(self, name)}")
        if self.body_timeout_s >= self.request_timeout_s:
            raise SettingsError(
                f"{PREFIX}BODY_TIMEOUT_S ({self.body_timeout_s}) must be below "
                f"{PREFIX}REQUEST_TIMEOUT_S ({self.request_timeout_s})"
            )
        if self.port > 65535:
            raise SettingsError(f"{PREFIX}PORT must be <= 65535, got {self.port}")
        if not 0 <= self.grpc_port <= 65535:
            raise SettingsError(f"{PREFIX}GRPC_PORT must be 0 (off) to 65535, got {self.grpc_port}")
        if self.grpc_port == self.port:
            raise SettingsError(f"{PREFIX}GRPC_PORT must differ from {PREFIX}PORT ({self.port})")

    def decode_pool_size(self, cpus: int) -> int:
        """Decoding threads per API worker on a machine (or container) of `cpus` CPUs.

        More threads than cores only take turns: Pillow releases the GIL while it decodes, but the
        rest of a decode (the digit normalisation, NumPy on small arrays) holds it, and every extra
        thread is one more waiting for it beside the event loop. On 2 cores the default model served
        16-35 % more images per second with 1 thread than with 4, and ViT-Ti/16 JPEGs as many
        (docs/benchmarks.md, "Decoding threads").
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
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError as exc:
                    raise SettingsError(f"{PREFIX}{f.name.upper()} must be an integer, not {raw!r}") from exc
            elif f.type in ("Path", Path):
                values[f.name] = Path(raw).expanduser()
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]
