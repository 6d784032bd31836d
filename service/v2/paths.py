"""Which REST paths are v2's, and the model they name; imported by the arbiter too, so it needs only `re`."""

from __future__ import annotations

import re
from collections.abc import Iterable

# /v2/models/{name}[/versions/{version}]/infer, the one v2 path the front door serves itself.
INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
# The metrics' route label for every model's infer path; no braces, at which simple parsers of the
# Prometheus text format end the label set.
INFER_ROUTE = "/v2/models/*/infer"


def infer_model(path: str) -> tuple[str, str | None] | None:
    """(name, version or None) for an infer path, else None."""
    match = INFER_PATH.fullmatch(path)
    return None if match is None else (match["name"], match["version"])


def route_label(path: str) -> str:
    """The metrics' route for a path: model names come from clients, so they never become label values."""
    return INFER_ROUTE if INFER_PATH.fullmatch(path) else path


class DoorPaths:
    """The paths the front door serves itself: the classify paths and every v2 infer path."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = frozenset(paths)

    def __contains__(self, path: object) -> bool:
        return path in self.paths or (isinstance(path, str) and INFER_PATH.fullmatch(path) is not None)
