"""`vitserve score DIR`, `vitserve merge FOLDER`, `vitserve classify IMAGE`: the SDK on the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vitserve.client.errors import InvalidRequest, ResultsFileError, VitserveError
from vitserve.client.merge import merge_results
from vitserve.client.progress import ProgressBar, format_progress, format_summary
from vitserve.client.protocol import DEFAULT_URL
from vitserve.client.scoring import Progress
from vitserve.client.sharding import Shard
from vitserve.client.sync import Client
from vitserve.client.walk import DEFAULT_EXTENSIONS

# Exit codes of `vitserve score`, also listed in its --help.
EXIT_OK = 0
EXIT_FILES_FAILED = 1  # the run finished, but some images have an error row
EXIT_USAGE = 2  # bad arguments (or ones the server refuses), a results file that cannot be resumed
EXIT_ABORTED = 3  # the service failed (unreachable after retries, 5xx): rerun to resume
EXIT_INTERRUPTED = 130  # Ctrl-C: rerun to resume
EXIT_TERMINATED = 143  # SIGTERM (Kubernetes stopping the pod): the rows so far kept, rerun to resume


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `score` and `classify` to the `vitserve` command."""
    url_default = os.environ.get("VITSERVE_URL", DEFAULT_URL)

    score = subparsers.add_parser(
        "score",
        help="classify every image under a folder or bucket prefix into JSONL/CSV (resumable, shardable)",
        description="Classify every image under DIR into OUT, one row per image. Rerunning with the same "
        "--out skips the images already in it, so an interrupted run finishes where it stopped. "
        "Object storage (s3://, gs://, az://) needs the matching extra (pip install 'vitserve[s3]') and "
        "takes credentials and endpoints from the back-end's standard environment and profiles only.",
        epilog=f"exit codes: {EXIT_OK} all scored, {EXIT_FILES_FAILED} some files failed (see their rows), "
        f"{EXIT_USAGE} bad arguments or results, "
        f"{EXIT_ABORTED} the service or the storage failed (rerun to resume), "
        f"{EXIT_INTERRUPTED} interrupted, {EXIT_TERMINATED} terminated (rerun to resume)",
    )
    score.add_argument(
        "dir",
        metavar="DIR",
        help="folder or object-storage prefix (s3://bucket/photos) to score, recursively",
    )
    score.add_argument(
        "--out",
        required=True,
        help="a .jsonl or .csv file, appended and resumed; or a results folder (a path ending in /, or "
        "an object-storage URL) of part files, resumed, that `vitserve merge` makes one file of",
    )
    score.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="K/N",
        help="score only shard K of N (0 <= K < N), chosen by a hash of each image's path; each shard "
        "writes its own sub-folder of the results folder --out",
    )
    score.add_argument(
        "--commit-rows",
        type=_positive_int,
        default=5000,
        help="results folder: rows per part file (default %(default)s)",
    )
    score.add_argument(
        "--commit-interval-s",
        type=_positive_float,
        default=10.0,
        help="results folder: commit a part at least this often (default %(default)s); a kill -9 loses "
        "at most this much work, which the rerun scores again",
    )
    _add_connection_arguments(score, url_default, retries=10)
    score.add_argument(
        "--concurrency", type=_positive_int, default=16, help="requests in flight (default 16)"
    )
    score.add_argument("--batch-size", type=_positive_int, default=8, help="images per request (default 8)")
    score.add_argument("--top-k", type=_positive_int, default=None, help="classes per image (server default)")
    score.add_argument(
        "--extensions",
        default=",".join(DEFAULT_EXTENSIONS),
        help="comma-separated file extensions to score (default %(default)s)",
    )
    score.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    score.set_defaults(func=run_score)

    merge = subparsers.add_parser(
        "merge",
        help="merge a results folder's shards into one JSONL/CSV file, sorted by path",
        description="Merge every shard of the results folder FOLDER (what `vitserve score --out FOLDER` "
        "wrote, with or without --shard) into one file, each image once, sorted by path. Refuses when a "
        "shard is missing or unfinished, or an image has two rows.",
        epilog=f"exit codes: {EXIT_OK} merged, {EXIT_USAGE} missing or unfinished shards, bad arguments, "
        f"{EXIT_ABORTED} the storage failed (rerun)",
    )
    merge.add_argument(
        "folder", metavar="FOLDER", help="the results folder (local path or object-storage URL)"
    )
    merge.add_argument(
        "--out", required=True, help="the merged file, .jsonl or .csv, local or object storage"
    )
    merge.set_defaults(func=run_merge)

    classify = subparsers.add_parser(
        "classify",
        help="classify one image and print the prediction as JSON",
        description=run_classify.__doc__,
        epilog="exit codes: 0 classified, 1 the server refused the image or failed, 2 bad arguments or "
        "an unreadable file",
    )
    classify.add_argument("image", metavar="IMAGE", help="image file, or - for standard input")
    _add_connection_arguments(classify, url_default, retries=3)
    classify.add_argument(
        "--top-k", type=_positive_int, default=None, help="classes to return (server default)"
    )
    classify.set_defaults(func=run_classify)


def run_score(args: argparse.Namespace) -> int:
    """Score a folder; the summary goes to stderr, the results to --out."""
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.no_progress else None
    last: list[Progress] = []

    def on_progress(progress: Progress) -> None:
        last[:] = [progress]
        if bar is not None:
            bar(progress)

    terminated: list[int] = []
    try:
        try:
            with _client(args) as client, _sigterm_as_interrupt(terminated):
                summary = client.score_folder(
                    args.dir,
                    args.out,
                    extensions=args.extensions.split(","),
                    concurrency=args.concurrency,
                    batch_size=args.batch_size,
                    top_k=args.top_k,
                    progress=on_progress,
                    shard=args.shard,
                    commit_rows=args.commit_rows,
                    commit_interval_s=args.commit_interval_s,
                )
        finally:
            if bar is not None:
                bar.close()  # so that what follows starts on a line of its own
    except KeyboardInterrupt:
        stopped_by = "terminated" if terminated else "interrupted"
        _say(f"{stopped_by}; {_so_far(last)}rerun the same command to resume")
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except (ResultsFileError, InvalidRequest) as exc:  # rerunning cannot help: fix the file or the arguments
        _say(f"error: {exc}")
        return EXIT_USAGE
    except VitserveError as exc:
        _say(f"stopped: {exc}; {_so_far(last)}rerun the same command to resume")
        return EXIT_ABORTED
    except (OSError, ValueError) as exc:  # a missing folder or bucket, a bad --out or --url, a full disk
        _say(f"error: {exc}")
        return EXIT_USAGE
    _say(format_summary(summary))
    return EXIT_OK if summary.ok else EXIT_FILES_FAILED


def run_merge(args: argparse.Namespace) -> int:
    """Merge a results folder into one file; the summary goes to stderr."""
    try:
        summary = merge_results(args.folder, args.out)
    except ResultsFileError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except VitserveError as exc:
        _say(f"stopped: {exc}; rerun the same command")
        return EXIT_ABORTED
    except (OSError, ValueError) as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    shards, rows, failed = summary.shards, summary.rows, summary.failed
    _say(f"merged {shards} shard(s): {rows} rows ({failed} errors) into {summary.output}")
    return EXIT_OK


@contextmanager
def _sigterm_as_interrupt(terminated: list[int]) -> Iterator[None]:
    """SIGTERM (a pod being stopped) takes Ctrl-C's path, so the rows already answered are kept.

    asyncio.run turns SIGINT into a cancellation of the run; re-raising SIGTERM as SIGINT reuses that
    path instead of killing the process between a PUT and its bookkeeping.
    """

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.append(signum)
        signal.raise_signal(signal.SIGINT)

    # A process started in the background by a shell without job control (`cmd &` in a script, some
    # entrypoint wrappers) inherits SIGINT ignored: then neither Ctrl-C nor SIGTERM would stop the
    # run, and a pod would sit out its grace period until SIGKILL. Python's own handler is what
    # asyncio.run looks for to turn SIGINT into a cancellation.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def run_classify(args: argparse.Namespace) -> int:
    """Classify one image with a running vitserve server and print the prediction as JSON."""
    try:
        image: Any = sys.stdin.buffer.read() if args.image == "-" else args.image
        with _client(args) as client:
            prediction = client.classify(image, top_k=args.top_k)
    except VitserveError as exc:
        _say(f"error: {exc.code + ': ' if exc.code else ''}{exc}")
        return 1
    except OSError as exc:
        _say(f"error: cannot read {args.image}: {exc}")
        return 2
    except ValueError as exc:  # a malformed --url
        _say(f"error: {exc}")
        return 2
    print(json.dumps(dataclasses.asdict(prediction), indent=2))
    return 0


def _add_connection_arguments(parser: argparse.ArgumentParser, url_default: str, retries: int) -> None:
    parser.add_argument(
        "--url", default=url_default, help="server address (default $VITSERVE_URL or %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument(
        "--retries",
        type=int,
        default=retries,
        help="retries of a request after a connection failure or overload (default %(default)s)",
    )


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, timeout=args.timeout, retries=args.retries)


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _so_far(last: list[Progress]) -> str:
    return f"{format_progress(last[0])}; " if last else ""


def _say(text: str) -> None:
    print(f"vitserve: {text}", file=sys.stderr)
