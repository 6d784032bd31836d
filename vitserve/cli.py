"""The `vitserve` command: one entry point, one module per subcommand.

Each subcommand module exposes `register(subparsers)`; they are imported only when named, so that
`vitserve score` or `vitserve serve` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that registers it
SUBCOMMANDS: dict[str, str] = {
    "train": "vitserve.models.train",
    "evaluate": "vitserve.models.evaluate",
    "export": "vitserve.export.cli",
    "inspect": "vitserve.export.inspect",
    "bench": "vitserve.bench.cli",
    "serve": "vitserve.service.cli",
    "score": "vitserve.client.cli",
    "merge": "vitserve.client.cli",
    "classify": "vitserve.client.cli",
    "explain": "vitserve.client.explain_cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser for `only`'s module; with only=None, a listing of every command."""
    parser = argparse.ArgumentParser(prog="vitserve", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if only is None:
        for name in SUBCOMMANDS:
            subparsers.add_parser(name, help=f"see `vitserve {name} --help`")
    else:
        importlib.import_module(SUBCOMMANDS[only]).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in SUBCOMMANDS:
        build_parser().parse_args(argv)  # prints usage or the error and exits
        return 2
    args = build_parser(only=command).parse_args(argv)
    return int(args.func(args) or 0)
