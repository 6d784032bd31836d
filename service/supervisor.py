"""One API worker's supervisor, in place of BentoML's arbiter: `python -m vitserve.service.supervisor`.

BentoML's arbiter (circus) imports the service module, and with it BentoML's SDK and FastAPI, only to
read the service's configuration, then sits beside the worker holding that memory (docs/benchmarks.md,
"Memory at rest"). With one API worker there is nothing to arrange between services, so `vitserve
serve` starts this instead, which does the arbiter's part with the standard library alone: it holds
the listening socket, starts the worker the arbiter would start (BentoML's worker module, the same
arguments), hands SIGTERM and SIGINT on to it and waits for it to drain, and starts a new one if it
dies after it was ready. A worker that dies before it was ever ready ends the supervisor with its
status: a bad model or setting would only fail again. Several API workers (and the model server they
feed) still run under BentoML's arbiter. The worker module's command line is BentoML's, not a public
API: the worker checks the pinned BentoML release at start-up (service/bento/pinned.py), and the
tests start it through here.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

# The worker writes a byte to this inherited pipe once it serves (service/app.py).
READY_FD_ENV = "VITSERVE_READY_FD"
WORKER_MODULE = "_bentoml_impl.worker.service"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger("vitserve.supervisor")


def tell_supervisor_ready() -> None:
    """In the worker, once it serves: the supervisor restarts a worker that dies after this only."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is not None:
        os.write(int(fd), b"1")
        os.close(int(fd))


def keep_ready_pipe_from_children() -> None:
    """In the worker, at once: a process it starts must not hold the pipe open after it has died."""
    fd = os.environ.get(READY_FD_ENV)
    if fd is not None:
        os.set_inheritable(int(fd), False)


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """Bound and listening as circus binds an arbiter's socket, inheritable by the worker."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def fresh_metrics_dir(bentoml_home: Path) -> Path:
    """Where BentoML's workers keep their Prometheus multiprocess files, emptied as its arbiter does."""
    path = bentoml_home / "prometheus_multiproc_dir"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class Supervisor:
    """Runs `command` (a worker, given the socket and the ready pipe) until a stop signal, replacing it
    when it dies after it was ready."""

    def __init__(self, command: list[str], env: dict[str, str], keep_fds: tuple[int, ...]) -> None:
        self.command = command
        self.env = env
        self.keep_fds = keep_fds
        self.stopping = False  # a plain flag: a signal handler must not take a lock
        self.worker: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        starts = 0
        while True:
            ready_read, ready_write = os.pipe()
            env = {**self.env, READY_FD_ENV: str(ready_write)}
            # Its own session, as circus starts workers: a terminal's Ctrl-C reaches this process only.
            self.worker = subprocess.Popen(
                self.command,
                env=env,
                pass_fds=(*self.keep_fds, ready_write),
                start_new_session=True,
                preexec_fn=_stop_with(os.getpid()),
            )
            os.close(ready_write)
            starts += 1
            log.info("worker %d started (pid %d)", starts, self.worker.pid)
            if self.stopping:  # a signal that came while it was being started
                self.worker.terminate()
            # EOF without a byte: the worker exited (or closed the pipe) before it was ready.
            with os.fdopen(ready_read, "rb") as ready:
                was_ready = ready.read(1) == b"1"
            status = self._reap(self.worker)
            if self.stopping:
                return 0 if status in (0, -signal.SIGTERM) else _exit_status(status)
            if not was_ready:
                log.error("worker exited with status %d before it was ready; not restarting it", status)
                return _exit_status(status) or 1
            log.error("worker (pid %d) exited with status %d; starting a new one", self.worker.pid, status)

    @staticmethod
    def _reap(worker: subprocess.Popen[bytes]) -> int:
        """The worker's status once it exits; any other child that ends meanwhile is reaped too, as a
        container's PID 1 must (orphans are handed to it)."""
        while True:
            child, wait_status = os.waitpid(-1, 0)
            if child == worker.pid:
                worker.returncode = os.waitstatus_to_exitcode(wait_status)
                return worker.returncode

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        first = not self.stopping
        self.stopping = True
        worker = self.worker
        if worker is not None and worker.poll() is None:
            # A second signal is handed on too: the worker's own handler then stops waiting.
            worker.send_signal(signal.SIGTERM)
        if first:
            log.info("%s: stopping the worker once its requests are answered", signal.Signals(signum).name)


def _stop_with(supervisor: int) -> Callable[[], None]:
    """In the worker before it execs: SIGTERM once the supervisor is gone, even SIGKILLed, so that no
    worker lives on holding the port with nothing to replace it."""

    def arrange() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # it died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


def _exit_status(status: int) -> int:
    return 128 - status if status < 0 else status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", help="the BentoML service's import string")
    parser.add_argument("--service-name", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, required=True)
    parser.add_argument("--timeout-keep-alive", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = listening_socket(args.host, args.port, args.backlog)
    except (OSError, ValueError) as exc:  # ValueError: not an IP address, as BentoML also requires
        log.error("Could not bind %s:%d: %s", args.host, args.port, exc)
        return 1
    env = dict(os.environ)
    bentoml_home = Path(env.get("BENTOML_HOME") or Path.home() / "bentoml")  # BentoML's own default
    env["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_metrics_dir(bentoml_home))
    shown_host = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    env["BENTOML_RUNNER_MAP"] = json.dumps({args.service_name: f"http://{shown_host}:{args.port}"})
    command = [sys.executable, "-m", WORKER_MODULE, args.service, "--fd", str(sock.fileno())]
    command += ["--service-name", args.service_name, "--backlog", str(args.backlog), "--worker-id", "1"]
    command += ["--timeout-keep-alive", str(args.timeout_keep_alive)]
    log.info("serving %s on http://%s:%d (Press CTRL+C to quit)", args.service, shown_host, args.port)
    return Supervisor(command, env, (sock.fileno(),)).run()


if __name__ == "__main__":
    sys.exit(main())
