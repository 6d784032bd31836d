"""`vitserve bench gpu`: the GPU run as one script: FP16 export, model-only throughput, the service.

    python -m vitserve.bench.gpu_suite --out DIR [--smoke] [--stages export model serve]

Each stage (bench/gpu_export.py, gpu_model.py, gpu_serve.py) runs in a process of its own under a time
budget: a stage that fails, hangs or dies in a native library (a CUDA abort, a segfault) is recorded
with its reason and the next stage still runs, and a stage stopped at its budget keeps the figures it
had written. --out receives results.json, summary.md and one log per stage (small files: what comes
back from a GPU host, docs/gpu.md); the ONNX artifacts go to --work.

--smoke runs the same pipeline on a 2-block ViT with tiny batches and seconds per point, so that the
whole suite is exercised on a CPU machine (tests/bench/test_gpu_suite.py). Its figures say nothing
about a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import onnxruntime as ort
import psutil

from vitserve.bench.gpu_config import (
    FULL_BUDGETS_S,
    H100_FP16_DENSE_TFLOPS,
    SMOKE_BUDGETS_S,
    STAGES,
    SuiteConfig,
)
from vitserve.bench.gpu_monitor import gpu_facts
from vitserve.bench.gpu_record import StageRecord
from vitserve.bench.gpu_report import markdown
from vitserve.bench.processes import process_tree
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.session import gpu_present

STAGE_MODULES = {
    "export": "vitserve.bench.gpu_export",
    "model": "vitserve.bench.gpu_model",
    "serve": "vitserve.bench.gpu_serve",
}
GRACE_S = 20.0  # past its budget a stage gets this long to stop on its own before it is killed
REPO = Path(__file__).resolve().parent.parent
FULL_BATCHES = (1, 8, 32, 64, 128, 256)
FULL_CONCURRENCIES = (1, 8, 32, 64, 128, 256, 512)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="results.json, summary.md, stage logs")
    parser.add_argument(
        "--work", type=Path, default=None, help="artifacts (GBs for ViT-B); default: a folder under $TMPDIR"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny ViT, tiny batches: tests the pipeline on a CPU"
    )
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    for stage in STAGES:
        parser.add_argument(
            f"--budget-{stage}-s",
            type=float,
            default=None,
            help=f"seconds for the {stage} stage (default {FULL_BUDGETS_S[stage]:g}; "
            f"smoke {SMOKE_BUDGETS_S[stage]:g})",
        )
    parser.add_argument("--batches", nargs="+", type=int, default=None, help=f"default {FULL_BATCHES}")
    parser.add_argument(
        "--concurrency", nargs="+", type=int, default=None, help=f"default {FULL_CONCURRENCIES}"
    )
    parser.add_argument(
        "--duration-s", type=float, default=None, help="measured seconds per point (default 3)"
    )
    parser.add_argument("--warmup-s", type=float, default=None, help="warm-up seconds per point (default 1)")
    parser.add_argument("--api-workers", type=int, default=None, help="default: CPU budget - 2 (smoke: 1)")
    parser.add_argument("--max-batch-size", type=int, default=None, help="the service's (default 256)")
    parser.add_argument("--heldout-images", type=int, default=None, help="ViT gate images (default 64)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    parser.add_argument("--peak-tflops", type=float, default=H100_FP16_DENSE_TFLOPS)


def resolve(args: argparse.Namespace) -> SuiteConfig:
    """Defaults for a full GPU run, or the smoke run's where --smoke; explicit options win either way."""
    smoke = args.smoke

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if smoke else full)

    device = args.device if args.device != "auto" else ("cuda" if gpu_present() else "cpu")
    budgets = SMOKE_BUDGETS_S if smoke else FULL_BUDGETS_S
    work = args.work or Path(tempfile.gettempdir()) / ("vitserve-gpu-smoke" if smoke else "vitserve-gpu-work")
    return SuiteConfig(
        out=str(args.out.resolve()),
        work=str(work.resolve()),
        device=device,
        smoke=smoke,
        stages=tuple(s for s in STAGES if s in args.stages),
        budgets_s={s: float(pick(getattr(args, f"budget_{s}_s"), budgets[s], budgets[s])) for s in STAGES},
        vit="tiny" if smoke else "base",
        heldout_images=pick(args.heldout_images, 64, 8),
        digits_heldout_images=2000 if not smoke else 64,
        batches=tuple(pick(args.batches, FULL_BATCHES, (1, 4))),
        rounds=3 if not smoke else 1,
        min_round_s=0.5 if not smoke else 0.05,
        compile_backend=pick(args.compile_backend, "inductor", "eager"),
        concurrencies=tuple(pick(args.concurrency, FULL_CONCURRENCIES, (1, 4))),
        duration_s=pick(args.duration_s, 3.0, 1.0),
        warmup_s=pick(args.warmup_s, 1.0, 1.0),
        api_workers=pick(args.api_workers, max(1, cpu_budget() - 2), 1),
        max_batch_size=pick(args.max_batch_size, 256, 8),
        peak_tflops=args.peak_tflops,
        threads=cpu_budget(),
    )


def environment() -> dict[str, Any]:
    from vitserve.bench.model import cpu_model

    return {
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_budget": cpu_budget(),
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "gpu": gpu_facts(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def kill_tree(pid: int) -> None:
    """The stage's process and everything below it, a server it started in a session of its own too."""
    family = process_tree(pid)
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for proc in family:
        with suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(family, timeout=10)


def run_stage(name: str, config: SuiteConfig, config_path: Path) -> dict[str, Any]:
    budget = config.budgets_s[name]
    record_path = config.work_dir / f"stage-{name}.json"
    record_path.unlink(missing_ok=True)
    # A checkout's loadtests/ (the /metrics reader the serve stage uses) is importable from the child.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "vitserve.bench.gpu_suite",
        "--stage-child",
        name,
        "--config",
        str(config_path),
    ]
    started = time.monotonic()
    print(f"stage {name}: budget {budget:g} s", file=sys.stderr, flush=True)
    with (config.out_dir / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout=budget + GRACE_S)
        except subprocess.TimeoutExpired:
            code = None
            kill_tree(proc.pid)
            proc.wait()
    seconds = time.monotonic() - started
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"figures": {}, "errors": []}
    errors = record["errors"]
    if code is None:
        status, reason = (
            "timeout",
            f"stopped at its budget ({budget:g} s + {GRACE_S:g} s grace); figures so far kept",
        )
    elif code != 0:
        status, reason = "failed", f"exit code {code}: {last_line(config.out_dir / f'{name}.log')}"
    elif errors:
        status = "partial"
        reason = "; ".join(
            f"{e['where']}: {e.get('error') or 'skipped: ' + e['skipped']}" for e in errors[:4]
        )
    else:
        status, reason = "ok", ""
    print(f"stage {name}: {status} in {seconds:.0f} s {reason[:200]}", file=sys.stderr, flush=True)
    return {"status": status, "reason": reason, "seconds": seconds, "budget_s": budget, **record}


def last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    return lines[-1][:500] if lines else "(no output)"


def run_suite(config: SuiteConfig, command: str) -> dict[str, Any]:
    config.out_dir.mkdir(parents=True, exist_ok=True)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    config_path = config.work_dir / "config.json"
    config.save(config_path)
    results: dict[str, Any] = {
        "command": command,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": config.device,
        "smoke": config.smoke,
        "config": json.loads(config_path.read_text()),
        "environment": environment(),
        "stages": {},
    }
    for name in STAGES:
        if name in config.stages:
            results["stages"][name] = run_stage(name, config, config_path)
        else:
            results["stages"][name] = {"status": "not-run", "reason": "not asked for (--stages)"}
        write_results(config, results)
    return results


def write_results(config: SuiteConfig, results: dict[str, Any]) -> None:
    (config.out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (config.out_dir / "summary.md").write_text(markdown(results))


def stage_child(name: str, config_path: Path) -> int:
    config = SuiteConfig.load(config_path)
    record = StageRecord(config.work_dir / f"stage-{name}.json", config.budgets_s[name])
    importlib.import_module(STAGE_MODULES[name]).run(config, record)
    return 0


def run_command(args: argparse.Namespace) -> int:
    config = resolve(args)
    argv = ["vitserve", "bench", "gpu", "--out", config.out, "--work", config.work, "--device", config.device]
    argv += ["--stages", *config.stages, *(["--smoke"] if config.smoke else [])]
    argv += [a for s in STAGES for a in (f"--budget-{s}-s", f"{config.budgets_s[s]:g}")]
    argv += ["--batches", *map(str, config.batches), "--concurrency", *map(str, config.concurrencies)]
    argv += ["--duration-s", f"{config.duration_s:g}", "--warmup-s", f"{config.warmup_s:g}"]
    argv += ["--api-workers", str(config.api_workers), "--max-batch-size", str(config.max_batch_size)]
    argv += ["--heldout-images", str(config.heldout_images), "--compile-backend", config.compile_backend]
    argv += ["--peak-tflops", f"{config.peak_tflops:g}"]
    results = run_suite(config, shlex.join(argv))
    print((config.out_dir / "summary.md").read_text())
    print(f"results: {config.out_dir / 'results.json'}")
    return 0 if all(s["status"] in ("ok", "partial", "not-run") for s in results["stages"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitserve.bench.gpu_suite", description=__doc__.splitlines()[0]
    )
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--stage-child"]:  # the suite's own call of one stage, in a process of its own
        return stage_child(argv[1], Path(argv[argv.index("--config") + 1]))
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
