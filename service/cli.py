"""`vitserve serve`: start the BentoML server for a model directory (the shipped default if none)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from vitserve.service.settings import API_SERVICE_NAME, PREFIX, Settings

SERVICE_PATH = "vitserve.service.app:VitServe"
# BentoML's default listen backlog, which its arbiter gives the socket too.
BACKLOG = 2048


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (POST /classify)",
        description="Options override the VITSERVE_* variable of the same name (README, Settings).",
    )
    parser.add_argument("--model-dir", type=Path, help="default: $VITSERVE_MODEL_DIR or the shipped model")
    parser.add_argument("--host", help="default: $VITSERVE_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: $VITSERVE_PORT or 3000")
    parser.add_argument("--precision", help="default: $VITSERVE_PRECISION or auto")
    parser.add_argument("--device", help="default: $VITSERVE_DEVICE or auto")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    given = {
        "MODEL_DIR": args.model_dir and str(args.model_dir.resolve()),
        "HOST": args.host,
        "PORT": args.port and str(args.port),
        "PRECISION": args.precision,
        "DEVICE": args.device,
    }
    environ = {**os.environ, **{PREFIX + k: v for k, v in given.items() if v is not None}}
    # Fail here, with the variable's name, before BentoML starts; the service reads the same variables.
    settings = Settings.from_env(environ)
    environ[PREFIX + "MODEL_DIR"] = str(settings.model_dir.resolve())
    # BentoML keeps its Prometheus multiprocess files under BENTOML_HOME and wipes them at start-up;
    # a home per port keeps two servers on one host (or a test beside a dev server) from erasing
    # each other's metrics.
    default_home = Path(tempfile.gettempdir()) / f"vitserve-{settings.port}" / "bentoml"
    environ.setdefault("BENTOML_HOME", str(default_home))
    # exec, not a child: signals (SIGTERM from Kubernetes, Ctrl-C) reach the supervising process directly.
    os.execve(sys.executable, serve_command(settings), environ)
    return 0  # not reached


def serve_command(settings: Settings) -> list[str]:
    """One API worker under vitserve's own supervisor (service/supervisor.py); several, with the model
    server they feed, under BentoML's arbiter."""
    listen = ["--host", settings.host, "--port", str(settings.port)]
    listen += ["--timeout-keep-alive", str(settings.keep_alive_s)]
    if settings.api_workers > 1:
        return [sys.executable, "-m", "bentoml", "serve", SERVICE_PATH, *listen]
    return [
        *(sys.executable, "-m", "vitserve.service.supervisor", SERVICE_PATH),
        *("--service-name", API_SERVICE_NAME, "--backlog", str(BACKLOG), *listen),
    ]
