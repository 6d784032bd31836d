"""Where one request's microseconds go at one client: py-spy samples the server while wrk sends one image
at a time.

    .venv/bin/python tools/request_timeline.py vit-tiny base naive [--seconds 10] [--rounds 2]

Each variant (`base`, `naive` or `LABEL:VITSERVE_X=V`, as in tools/ab_serve.py) is started, warmed up,
then driven by one wrk connection while py-spy records every Python thread of the process that serves
(vitserve's API worker; the naive server itself) at 1 kHz, idle samples left out. With one request in
flight at a time, a thread's busy samples divided by the requests answered are that step's time per
request. Each sample goes to the innermost frame that names a step:

  parse    the HTTP, ASGI and multipart layers (uvicorn, starlette, FastAPI, python-multipart, BentoML)
  decode   runtime/decode.py, the digits normaliser, Pillow
  batch    runtime/batcher.py: queueing and stacking images
  model    onnxruntime's run (the calling thread; ORT's own worker threads are not Python threads)
  scores   runtime/predictions.py: softmax and top-k
  answer   JSON and pydantic: building the response
  other    the rest of the Python that ran (asyncio, middleware, metrics, logging)

`waiting` is the wall time per request less every busy thread's time: the loop and the threads asleep
between hand-offs, the kernel's network stack and the client. Needs py-spy (the peers extra) and wrk.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from vitserve.bench import workloads
from vitserve.bench.peers import NAIVE, VITSERVE, vitserve_variant
from vitserve.bench.serve import BenchConfig, Server, ServerSpec, check_answers
from vitserve.bench.wrk import Upload, run_wrk
from vitserve.harness.procs import worker_pids
from vitserve.service.settings import API_SERVICE_NAME

RATE_HZ = 1000
# (step, pattern on a frame "function (file:line)"), tried innermost frame first: the first hit names it.
STEPS = (
    ("model", re.compile(r"[(/]onnxruntime/")),
    ("scores", re.compile(r"runtime/predictions\.py")),
    ("decode", re.compile(r"runtime/(decode|digit_preprocess)\.py|[(/]PIL/")),
    ("batch", re.compile(r"runtime/batcher\.py")),
    (
        "answer",
        re.compile(r"[(/](json|pydantic|pydantic_core)/|[(/]starlette/responses\.py|service/schemas\.py"),
    ),
    (
        "parse",
        re.compile(r"[(/](uvicorn|h11|httptools|starlette|fastapi|python_multipart|multipart|_?bentoml\w*)/"),
    ),
    ("parse", re.compile(r"service/(multipart|requests|front_door|classify_http)\.py")),
)
# Innermost frames of a thread that waits: py-spy's own idle test is unreliable while it does not stop
# the process (--nonblocking). The event loop's wait shows as Runner.run; so does uvloop's C code, which
# py-spy cannot see into without --native: that share of the loop's work falls under `waiting`.
IDLE_LEAVES = re.compile(
    r"^(Runner\.run \(asyncio|_worker \(concurrent/futures/thread\.py|Condition\.wait \(|Event\.wait \(|"
    r"Queue\.get \(|select \(selectors\.py|Thread\._bootstrap_inner|thread \()"
)
ORDER = ("parse", "decode", "batch", "model", "scores", "answer", "other")


def spec_for(variant: str) -> ServerSpec:
    return {"base": VITSERVE, "naive": NAIVE}.get(variant) or vitserve_variant(variant)


def step_of(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for step, pattern in STEPS:
            if pattern.search(frame):
                return step
    return "other"


def serving_pid(server: Server) -> int:
    """vitserve's API worker (where a request is parsed, decoded and batched), else the server itself."""
    workers = worker_pids(server.pid, API_SERVICE_NAME)
    return workers[0] if workers else server.pid


def record(server: Server, upload: Upload, seconds: float, out: Path) -> float:
    """py-spy's raw stacks of the serving process under one wrk connection; returns requests answered."""
    # On PATH, or beside this interpreter (a virtualenv that is not activated).
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[peers]'")
    command = [spy, "record", "-p", str(serving_pid(server)), "--duration", f"{seconds:g}"]
    command += ["--rate", str(RATE_HZ), "--format", "raw", "--threads", "--nonblocking", "-o", str(out)]
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = run_wrk(server.url + server.spec.classify_path, upload, 1, seconds)
    sampler.wait()
    return result.ok_per_s


def busy_us(stacks: Path, seconds: float) -> dict[str, float]:
    """µs per second of wall time that some thread spent in each step."""
    per_step: collections.Counter[str] = collections.Counter()
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]
        if not frames or IDLE_LEAVES.match(frames[-1]):
            continue
        per_step[step_of(frames)] += int(count)
    return {step: per_step[step] / RATE_HZ / seconds * 1e6 for step in ORDER}


def timeline(
    variant: str, workload: workloads.Workload, seconds: float, rounds: int, stacks: Path
) -> dict[str, float]:
    """Median over rounds of µs per request in each step, `waiting`, and the request's wall time; py-spy's
    stacks are left in the folder `stacks`."""
    spec = spec_for(variant)
    server = Server(spec, workload.model_dir, BenchConfig()).start()
    rows: list[dict[str, float]] = []
    try:
        upload = spec.upload(workload.image, workload.media_type)
        check_answers(server, upload)
        run_wrk(server.url + spec.classify_path, upload, 1, 2)  # warm-up
        for index in range(rounds):
            out = stacks / f"{spec.name}-{index + 1}.txt"
            rate = record(server, upload, seconds, out)
            per_s = busy_us(out, seconds)
            row = {step: us / rate for step, us in per_s.items()}
            row["wall"] = 1e6 / rate
            row["waiting"] = row["wall"] - sum(row[s] for s in ORDER)
            rows.append(row)
    finally:
        server.stop()
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(workloads.WORKLOADS))
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stacks", type=Path, default=None, help="keep py-spy's raw stacks in this folder")
    args = parser.parse_args()
    workload = workloads.WORKLOADS[args.workload]()
    with tempfile.TemporaryDirectory(prefix="vitserve-timeline-") as tmp:
        stacks = args.stacks or Path(tmp)
        stacks.mkdir(parents=True, exist_ok=True)
        results = {v: timeline(v, workload, args.seconds, args.rounds, stacks) for v in args.variants}
    columns = [*ORDER, "waiting", "wall"]
    rounds = f"median of {args.rounds} rounds of {args.seconds:g} s"
    print(f"{args.workload}, one client, µs per request ({rounds}):")
    print("| server | " + " | ".join(columns) + " |")
    print("| --- |" + " ---: |" * len(columns))
    for variant, row in results.items():
        print(f"| {spec_for(variant).name} | " + " | ".join(f"{row[c]:.0f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
