"""The GPU's identity and its utilisation over a measurement: NVML (nvidia-ml-py) first, else nvidia-smi.

Where neither answers (a CPU machine, a container without the driver's tools) the reason is returned
instead of figures, and the suite reports it.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time
from types import TracebackType
from typing import Any

SMI_QUERY = "name,driver_version,memory.total,clocks.max.sm,power.limit"


def gpu_facts() -> dict[str, Any]:
    """Name, driver, memory and clocks of GPU 0, from nvidia-smi; {"unavailable": why} without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"unavailable": "nvidia-smi is not on PATH (no NVIDIA driver here)"}
    result = subprocess.run(
        [smi, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader"], capture_output=True, text=True
    )
    if result.returncode != 0:
        return {"unavailable": f"nvidia-smi failed ({result.returncode}): {result.stderr.strip()[:300]}"}
    first = result.stdout.strip().splitlines()[0]
    return dict(zip(SMI_QUERY.split(","), (v.strip() for v in first.split(",")), strict=False))


class UtilisationSampler:
    """`with sampler:` samples GPU 0's utilisation (% of time a kernel ran) and memory in a thread."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (utilisation %, memory used MiB)
        self.reason = ""
        self._read = self._nvml_reader() or self._smi_reader()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._read is not None

    def _nvml_reader(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception as exc:  # ImportError, or NVMLError_* (no driver library, no device)
            self.reason = f"NVML: {type(exc).__name__}: {exc}"
            return None

        def read() -> tuple[float, float]:
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            return float(rates.gpu), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

        return read

    def _smi_reader(self) -> Any:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            self.reason += "; nvidia-smi is not on PATH"
            return None

        def read() -> tuple[float, float]:
            out = subprocess.run(
                [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split(",")
            return float(out[0]), float(out[1])

        return read

    def __enter__(self) -> UtilisationSampler:
        self.samples = []
        if self._read is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        assert self._read is not None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.samples.append(self._read())
            except Exception as exc:  # the driver went away mid-run: keep what was sampled, say why
                self.reason = f"sampling stopped: {type(exc).__name__}: {exc}"
                return
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"unavailable": self.reason or "no samples"}
        util = [u for u, _ in self.samples]
        return {
            "util_mean_pct": statistics.fmean(util),
            "util_median_pct": statistics.median(util),
            "util_max_pct": max(util),
            "memory_used_max_mib": max(m for _, m in self.samples),
            "samples": len(self.samples),
        }
