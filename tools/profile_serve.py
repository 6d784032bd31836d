"""Where a loaded vitserve API worker's time goes: py-spy samples it while wrk drives /classify.

    .venv-peers/bin/python tools/profile_serve.py digits 64 --out /tmp/stacks.txt
    .venv-peers/bin/python tools/profile_serve.py digits 64 --protocol grpc --native --out /tmp/grpc.txt

Starts `vitserve serve` on a bench workload (bench/workloads.py), warms it up, records py-spy's raw
stacks (every thread, idle samples included) for 12 s under `concurrency` wrk connections (or, with
`--protocol grpc`, h2load's gRPC ModelInfer calls as `vitserve bench v2` sends them; with
`--protocol v2`, wrk's v2 REST infer requests, the image as a binary BYTES tensor), and prints each
thread's busy share and the event loop's time by package. Needs py-spy (the peers extra).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from vitserve.bench.peers import v2_binary, v2_infer_path
from vitserve.bench.processes import ServerProcess, free_port, running
from vitserve.bench.v2 import GRPC_INFER, grpc_body, run_h2load, served
from vitserve.bench.workloads import WORKLOADS
from vitserve.bench.wrk import Upload, run_wrk
from vitserve.harness.procs import worker_pids
from vitserve.service.settings import API_SERVICE_NAME

IDLE_LEAVES = ("Runner.run", "_worker (concurrent/futures/thread.py", "Condition.wait")


def record(
    workload: str,
    concurrency: int,
    out: Path,
    seconds: float,
    protocol: str = "classify",
    native: bool = False,
) -> float:
    w = WORKLOADS[workload]()
    grpc_port = free_port()
    env = {"VITSERVE_MODEL_DIR": str(w.model_dir), "VITSERVE_INTRA_OP_THREADS": "2", "VITSERVE_DEVICE": "cpu"}
    env["VITSERVE_GRPC_PORT"] = str(grpc_port)
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[peers]'")
    with (
        tempfile.TemporaryDirectory(prefix="vitserve-profile-") as tmp,
        running(ServerProcess(env=env)) as server,
    ):
        assert server.proc is not None
        (worker_pid,) = worker_pids(server.proc.pid, API_SERVICE_NAME)
        upload = Upload.multipart("image", "image." + w.media_type.split("/")[1], w.image, w.media_type)
        infer_path = v2_infer_path(w.model_dir)
        v2_upload = v2_binary(w.image, w.media_type)
        body = Path(tmp) / "grpc.bin"
        body.write_bytes(grpc_body(w.image, infer_path.split("/")[3]))

        def load(duration_s: float) -> float:
            """img/s answered under `concurrency` closed-loop connections of the protocol profiled."""
            if protocol == "classify":
                return run_wrk(server.url + "/classify", upload, concurrency, duration_s).ok_per_s
            if protocol == "v2":
                return run_wrk(server.url + infer_path, v2_upload, concurrency, duration_s).ok_per_s
            before, _ = served(server.url, GRPC_INFER)
            run_h2load(f"http://127.0.0.1:{grpc_port}{GRPC_INFER}", body, concurrency, duration_s)
            return (served(server.url, GRPC_INFER)[0] - before) / duration_s

        load(3)  # warm-up
        command = [spy, "record", "-p", str(worker_pid), "--duration", f"{seconds:g}", "--rate", "200"]
        command += ["--format", "raw", "--threads", "--idle", "-o", str(out)]
        # py-spy unwinds native stacks only with the process paused at each sample.
        command += ["--native"] if native else ["--nonblocking"]
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rate = load(seconds - 2)
        sampler.wait()
    return rate


def summarise(stacks: Path) -> None:
    per_thread: collections.Counter[str] = collections.Counter()
    busy: collections.Counter[str] = collections.Counter()
    loop_packages: collections.Counter[str] = collections.Counter()
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
        per_thread[thread] += n
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        busy[thread] += n
        if thread == "MainThread":
            found = re.search(r"\((?:.*site-packages/)?([^/:]+)", frames[-1])
            loop_packages[found.group(1) if found else frames[-1]] += n
    for thread, n in per_thread.most_common():
        print(f"{thread:24s} busy {busy[thread] / n:6.1%}")
    total = sum(loop_packages.values())
    print("\nevent loop's busy time by package (leaf frame):")
    for package, n in loop_packages.most_common(12):
        print(f"  {n / total:6.1%}  {package}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--out", type=Path, default=Path("stacks.txt"))
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--protocol", choices=["classify", "v2", "grpc"], default="classify")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames (grpcio's) too")
    args = parser.parse_args()
    rate = record(args.workload, args.concurrency, args.out, args.seconds, args.protocol, args.native)
    print(f"{args.workload} {args.protocol} c={args.concurrency}: {rate:.1f} img/s")
    summarise(args.out)


if __name__ == "__main__":
    main()
