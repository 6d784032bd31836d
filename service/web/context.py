"""How the HTTP routes get the worker's objects (service/worker.py): through the FastAPI app's state.

The FastAPI app has to exist when BentoML imports the service (it is mounted by a class decorator),
before any model is loaded; each worker hands its objects over at start-up through `app.state`,
FastAPI's place for objects created at start-up, and the routes read them from their request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request

if TYPE_CHECKING:  # explain.py's routes import this module, and worker.py imports explain.py
    from vitserve.service.worker import Worker


def hand_over(app: FastAPI, worker: Worker) -> None:
    app.state.vitserve = worker


def context_of(request: Request) -> Worker:
    return request.app.state.vitserve  # type: ignore[no-any-return]
