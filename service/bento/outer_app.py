"""Patch: put an ASGI app of ours in front of BentoML's whole middleware stack, for one service.

bentoml 1.4.40 (pinned) builds a worker's ASGI app in `Service.to_asgi` with its own middlewares
outermost; a service's middlewares and mounted apps only ever run inside them, and no supported hook
reaches outside. The front door (service/web/door.py) must, so `wrap_service_app` wraps `to_asgi`
for one service: the worker then serves `wrap(bentoml_app)`. Other services are left alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from _bentoml_sdk import Service

from vitserve.service.bento.pinned import require_bentoml

ASGIApp = Any
Wrap = Callable[[ASGIApp], ASGIApp]
_ORIGINAL = "__vitserve_original__"


def wrap_service_app(service: Service[Any], wrap: Wrap) -> None:
    """From now on `service.to_asgi()` returns `wrap(what BentoML built)`."""
    require_bentoml("service/bento/outer_app.py")
    cls = type(service)
    original = getattr(cls.to_asgi, _ORIGINAL, cls.to_asgi)
    if not callable(original) or list(inspect.signature(original).parameters) != ["self", "is_main"]:
        raise RuntimeError("bentoml's Service.to_asgi changed shape; re-check service/bento/outer_app.py")
    wraps: dict[int, Wrap] = getattr(cls.to_asgi, "wraps", {})
    wraps[id(service)] = wrap

    def to_asgi(self: Service[Any], is_main: bool = True) -> ASGIApp:
        app = original(self, is_main)
        wrapper = wraps.get(id(self))
        return app if wrapper is None else wrapper(app)

    setattr(to_asgi, _ORIGINAL, original)
    to_asgi.wraps = wraps  # type: ignore[attr-defined]
    cls.to_asgi = to_asgi  # type: ignore[method-assign]
