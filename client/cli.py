"""`vitserve score DIR` and `vitserve classify IMAGE`: the client SDK on the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from vitserve.client.errors import InvalidRequest, ResultsFileError, VitserveError
from vitserve.client.progress import ProgressBar, format_progress, format_summary
from vitserve.client.protocol import DEFAULT_URL
from vitserve.client.scoring import Progress
from vitserve.client.sync import Client
from vitserve.client.walk import DEFAULT_EXTENSIONS

# Exit codes of `vitserve score`, also listed in its --help.
EXIT_OK = 0
EXIT_FILES_FAILED = 1  # the run finished, but some images have an error row
EXIT_USAGE = 2  # bad arguments (or ones the server refuses), a results file that cannot be resumed
EXIT_ABORTED = 3  # the service failed (unreachable after retries, 5xx): rerun to resume
EXIT_INTERRUPTED = 130  # Ctrl-C: rerun to resume


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `score` and `classify` to the `vitserve` command."""
    url_default = os.environ.get("VITSERVE_URL", DEFAULT_URL)

    score = subparsers.add_parser(
        "score",
        help="classify every image under a folder into a JSONL/CSV file (resumable)",
        description="Classify every image under DIR into OUT, one row per file. Rerunning with the same "
        "--out skips the files already in it, so an interrupted run finishes where it stopped.",
        epilog=f"exit codes: {EXIT_OK} all scored, {EXIT_FILES_FAILED} some files failed (see their rows), "
        f"{EXIT_USAGE} bad arguments or results file, "
        f"{EXIT_ABORTED} the service failed (rerun to resume), "
        f"{EXIT_INTERRUPTED} interrupted (rerun to resume)",
    )
    score.add_argument("dir", metavar="DIR", help="folder to score, walked recursively")
    score.add_argument("--out", required=True, help="results file, .jsonl or .csv; resumed if it exists")
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

    try:
        try:
            with _client(args) as client:
                summary = client.score_folder(
                    args.dir,
                    args.out,
                    extensions=args.extensions.split(","),
                    concurrency=args.concurrency,
                    batch_size=args.batch_size,
                    top_k=args.top_k,
                    progress=on_progress,
                )
        finally:
            if bar is not None:
                bar.close()  # so that what follows starts on a line of its own
    except KeyboardInterrupt:
        _say(f"interrupted; {_so_far(last)}rerun the same command to resume")
        return EXIT_INTERRUPTED
    except (ResultsFileError, InvalidRequest) as exc:  # rerunning cannot help: fix the file or the arguments
        _say(f"error: {exc}")
        return EXIT_USAGE
    except VitserveError as exc:
        _say(f"stopped: {exc}; {_so_far(last)}rerun the same command to resume")
        return EXIT_ABORTED
    except (OSError, ValueError) as exc:  # a missing folder, a bad --out suffix or --url, a full disk
        _say(f"error: {exc}")
        return EXIT_USAGE
    _say(format_summary(summary))
    return EXIT_OK if summary.ok else EXIT_FILES_FAILED


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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _so_far(last: list[Progress]) -> str:
    return f"{format_progress(last[0])}; " if last else ""


def _say(text: str) -> None:
    print(f"vitserve: {text}", file=sys.stderr)
