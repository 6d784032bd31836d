"""`vitserve explain IMAGE --out overlay.png`: the prediction and where the model looked, from a server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from vitserve.client.cli import _add_connection_arguments, _client, _positive_int, _say
from vitserve.client.errors import VitserveError
from vitserve.client.explain import HEAD_FUSIONS
from vitserve.client.protocol import DEFAULT_URL


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `explain` to the `vitserve` command."""
    parser = subparsers.add_parser(
        "explain",
        help="classify one image and save its attention rollout overlay",
        description=run_explain.__doc__,
    )
    parser.add_argument("image", metavar="IMAGE", help="image file, or - for standard input")
    parser.add_argument("--out", default=None, help="write the overlay PNG here (default: no file)")
    _add_connection_arguments(parser, os.environ.get("VITSERVE_URL", DEFAULT_URL), retries=3)
    parser.add_argument(
        "--top-k", type=_positive_int, default=None, help="classes to return (server default)"
    )
    parser.add_argument(
        "--head-fusion", choices=HEAD_FUSIONS, default="mean", help="how each layer's heads are combined"
    )
    parser.add_argument(
        "--class",
        dest="for_class",
        default=None,
        help="label or index whose score to report (the rollout map is the same for every class)",
    )
    parser.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    """Explain one image with a running vitserve server: print the prediction and the rollout map as
    JSON, and write the overlay PNG to --out."""
    try:
        image: Any = sys.stdin.buffer.read() if args.image == "-" else args.image
        with _client(args) as client:
            result = client.explain(
                image,
                top_k=args.top_k,
                head_fusion=args.head_fusion,
                for_class=args.for_class,
                overlay=args.out is not None,
            )
        if args.out is not None:
            result.save_overlay(args.out)
    except VitserveError as exc:
        _say(f"error: {exc.code + ': ' if exc.code else ''}{exc}")
        return 1
    except OSError as exc:
        _say(f"error: {exc}")
        return 2
    except ValueError as exc:  # a malformed --url
        _say(f"error: {exc}")
        return 2
    p = result.prediction
    summary = {
        "label": p.label,
        "score": p.score,
        "top_k": [{"label": t.label, "index": t.index, "score": t.score} for t in p.top_k],
        "model": str(p.model),
        "explanation": {
            "method": result.method,
            "head_fusion": result.head_fusion,
            "class": {
                "label": result.target.label,
                "index": result.target.index,
                "score": result.target.score,
            },
            "grid": list(result.grid),
            "map": [list(row) for row in result.heatmap],
            "overlay": args.out,
        },
    }
    print(json.dumps(summary))
    return 0
