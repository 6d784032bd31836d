"""`vitserve serve`: start the BentoML server for a model directory (the shipped default if none)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from vitserve.service.settings import DEFAULT_MODEL_DIR, PREFIX, Settings

SERVICE_PATH = "vitserve.service.app:VitServe"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model over HTTP (POST /classify)")
    env = os.environ
    parser.add_argument(
        "--model-dir", type=Path, default=Path(env.get(PREFIX + "MODEL_DIR", DEFAULT_MODEL_DIR))
    )
    parser.add_argument("--host", default=env.get(PREFIX + "HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get(PREFIX + "PORT", "3000")))
    parser.add_argument("--precision", default=env.get(PREFIX + "PRECISION", "auto"))
    parser.add_argument("--device", default=env.get(PREFIX + "DEVICE", "auto"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {
        "MODEL_DIR": str(args.model_dir.resolve()),
        "HOST": args.host,
        "PORT": str(args.port),
        "PRECISION": args.precision,
        "DEVICE": args.device,
    }
    environ = {**os.environ, **{PREFIX + k: v for k, v in overrides.items()}}
    # BentoML keeps its Prometheus multiprocess files under BENTOML_HOME and wipes them at start-up;
    # a home per port keeps two servers on one host (or a test beside a dev server) from erasing
    # each other's metrics.
    environ.setdefault("BENTOML_HOME", str(Path(tempfile.gettempdir()) / f"vitserve-{args.port}" / "bentoml"))
    Settings.from_env(environ)  # fail here, with the variable's name, before BentoML starts
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE_PATH,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    # exec, not a child: signals (SIGTERM from Kubernetes, Ctrl-C) reach BentoML's arbiter directly.
    os.execve(sys.executable, command, environ)
    return 0  # not reached
