"""What the HTTP routes are handed once the service instance exists: the classify flow and its peers.

The FastAPI app has to exist when BentoML imports the service (it is mounted by a class decorator),
before any model is loaded; the service's constructor then hands it a RouteContext through
`app.state`, FastAPI's place for objects created at start-up. Routes read it from their request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request

if TYPE_CHECKING:  # explain.py's routes import this module
    from vitserve.service.classify import ClassifyFlow
    from vitserve.service.explain import Explainer
    from vitserve.service.settings import Settings


@dataclass(frozen=True)
class RouteContext:
    settings: Settings
    flow: ClassifyFlow
    explainer: Explainer


def hand_over(app: FastAPI, context: RouteContext) -> None:
    app.state.vitserve = context


def context_of(request: Request) -> RouteContext:
    return request.app.state.vitserve  # type: ignore[no-any-return]
