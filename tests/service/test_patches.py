"""Each patch of a BentoML internal against the installed (pinned) bentoml: it applies, and does what it
says; each refuses a release it was not checked against. These fail when upstream changes shape."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from vitserve.service.bento import pinned
from vitserve.service.bento.outer_app import wrap_service_app
from vitserve.service.bento.request_timeout import cancel_request_timers
from vitserve.service.web.door import FrontDoor


def test_the_front_door_stands_in_front_of_bentomls_whole_middleware_stack() -> None:
    from vitserve.service.app import DOOR, VitServe  # applies both patches, as a worker does

    app = VitServe.to_asgi(is_main=True)  # type: ignore[attr-defined]
    assert app is DOOR
    assert isinstance(DOOR.behind, Starlette)
    stack = [getattr(m.cls, "__name__", "") for m in DOOR.behind.user_middleware]
    # What the door skips for classify requests, outermost first: if BentoML adds, drops or renames a
    # middleware, the door's reasoning (service/web/door.py) needs a new look.
    assert stack == [
        "RunnerTrafficMetricsMiddleware",
        "OpenTelemetryMiddleware",
        "AccessLogMiddleware",
        "TimeoutMiddleware",
        "ContextMiddleware",
    ]


def test_wrapping_refuses_a_to_asgi_of_another_shape() -> None:
    class Reshaped:
        def to_asgi(self, is_main: bool = True, extra: int = 0) -> object:
            return object()

    with pytest.raises(RuntimeError, match="changed shape"):
        wrap_service_app(Reshaped(), lambda app: app)  # type: ignore[arg-type]


def test_a_door_wraps_only_its_own_service() -> None:
    from vitserve.service.app import VitServe
    from vitserve.service.model.server import model_server_service
    from vitserve.service.settings import Settings

    other = model_server_service(Settings(), "vitserve")
    mine = VitServe.to_asgi(is_main=True)  # type: ignore[attr-defined]
    assert mine is not other.to_asgi(is_main=False)  # type: ignore[attr-defined]
    assert not isinstance(other.to_asgi(is_main=False), FrontDoor)  # type: ignore[attr-defined]


@pytest.mark.parametrize("patch", [cancel_request_timers, lambda: wrap_service_app(object(), lambda a: a)])
def test_every_patch_refuses_an_unpinned_bentoml(monkeypatch: pytest.MonkeyPatch, patch: object) -> None:
    monkeypatch.setattr(pinned.bentoml, "__version__", "1.4.41")
    with pytest.raises(pinned.UnpinnedBentoML, match=r"1\.4\.40"):
        patch()  # type: ignore[operator]


def test_the_pin_matches_pyproject() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert f"bentoml=={pinned.BENTOML_VERSION}" in pyproject["project"]["dependencies"]
