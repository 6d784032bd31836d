"""Where a loaded vitserve API worker's time goes: py-spy samples it while wrk drives /classify.

    .venv-peers/bin/python tools/profile_serve.py digits 64 --out /tmp/stacks.txt

Starts `vitserve serve` on a bench workload (bench/workloads.py), warms it up, records py-spy's raw
stacks (every thread, idle samples included) for 12 s under `concurrency` wrk connections, and prints
each thread's busy share and the event loop's time by package. Needs py-spy (the peers extra).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
from pathlib import Path

from vitserve.bench.processes import ServerProcess, process_tree, running
from vitserve.bench.workloads import WORKLOADS
from vitserve.bench.wrk import Upload, run_wrk

IDLE_LEAVES = ("Runner.run", "_worker (concurrent/futures/thread.py", "Condition.wait")


def record(workload: str, concurrency: int, out: Path, seconds: float) -> float:
    w = WORKLOADS[workload]()
    env = {"VITSERVE_MODEL_DIR": str(w.model_dir), "VITSERVE_INTRA_OP_THREADS": "2", "VITSERVE_DEVICE": "cpu"}
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[peers]'")
    with running(ServerProcess(env=env)) as server:
        assert server.proc is not None
        (worker,) = [
            p
            for p in process_tree(server.proc.pid)
            if "--service-name vitserve " in " ".join(p.cmdline()) + " "
        ]
        upload = Upload.multipart("image", "image." + w.media_type.split("/")[1], w.image, w.media_type)
        run_wrk(server.url + "/classify", upload, concurrency, 3)  # warm-up
        command = [spy, "record", "-p", str(worker.pid), "--duration", f"{seconds:g}", "--rate", "200"]
        command += ["--format", "raw", "--threads", "--idle", "--nonblocking", "-o", str(out)]
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = run_wrk(server.url + "/classify", upload, concurrency, seconds - 2)
        sampler.wait()
    return result.ok_per_s


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
    args = parser.parse_args()
    rate = record(args.workload, args.concurrency, args.out, args.seconds)
    print(f"{args.workload} c={args.concurrency}: {rate:.1f} img/s")
    summarise(args.out)


if __name__ == "__main__":
    main()
