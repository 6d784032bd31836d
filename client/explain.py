"""`explain`: a prediction plus its attention rollout map, from POST /explain.

The operation follows protocol.py's shape (a generator of Send/Sleep steps), so `Client.explain`
and `AsyncClient.explain` share it and its parsing. The map is class-agnostic (attention rollout
does not depend on the output class); `for_class` only chooses whose score comes back with it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitserve.client.errors import ServerError
from vitserve.client.images import ImagePayload
from vitserve.client.protocol import Operation, Send, _json, _send_with_retries
from vitserve.client.results import Prediction, TopK, _malformed, parse_prediction
from vitserve.client.retry import OverloadGate, RetryPolicy

HEAD_FUSIONS = ("mean", "max", "min")


@dataclass(frozen=True)
class Explanation:
    """The server's prediction, its rollout map over the patch grid and, if asked for, the overlay PNG."""

    prediction: Prediction
    heatmap: tuple[tuple[float, ...], ...]  # (rows, cols) patch grid; the values sum to 1
    head_fusion: str
    method: str  # "attention_rollout"
    target: TopK  # the class whose score is reported (the top class unless for_class was given)
    overlay_png: bytes | None  # the map over the image the model saw, PNG-encoded

    @property
    def grid(self) -> tuple[int, int]:
        return (len(self.heatmap), len(self.heatmap[0]) if self.heatmap else 0)

    def save_overlay(self, path: str | Path) -> Path:
        """Write the overlay PNG to `path`; ValueError when it was not requested (overlay=False)."""
        if self.overlay_png is None:
            raise ValueError("this explanation has no overlay; call explain(..., overlay=True)")
        target = Path(path)
        target.write_bytes(self.overlay_png)
        return target


def explain(
    payload: ImagePayload,
    top_k: int | None,
    head_fusion: str,
    for_class: str | int | None,
    overlay: bool,
    policy: RetryPolicy,
    gate: OverloadGate,
) -> Operation[Explanation]:
    """POST /explain with one image."""
    response = yield from _send_with_retries(
        Send(
            "POST",
            "/explain",
            params=explain_params(top_k, head_fusion, for_class, overlay),
            files=(("image", (payload.filename, payload.data, payload.content_type)),),
        ),
        policy,
        gate,
    )
    return parse_explanation(_json(response))


def explain_params(
    top_k: int | None, head_fusion: str, for_class: str | int | None, overlay: bool
) -> dict[str, str]:
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
    params = {"format": "both" if overlay else "json", "head_fusion": head_fusion}
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        params["top_k"] = str(top_k)
    if for_class is not None:
        params["class"] = str(for_class)
    return params


def parse_explanation(body: Any) -> Explanation:
    """An Explanation from a /explain JSON body; ServerError when it does not follow the API."""
    prediction = parse_prediction(body)
    with _malformed("explanation"):
        data = body["explanation"]
        heatmap = tuple(tuple(float(v) for v in row) for row in data["map"])
        if not heatmap or len({len(row) for row in heatmap}) != 1:
            raise ValueError("the map is not a non-empty rectangular grid")
        target = data["class"]
        png_text = data.get("overlay_png")
        try:
            png = base64.b64decode(png_text, validate=True) if png_text is not None else None
        except binascii.Error as exc:
            raise ServerError(f"the overlay is not valid base64: {exc}", code="invalid_response") from exc
        return Explanation(
            prediction=prediction,
            heatmap=heatmap,
            head_fusion=str(data["head_fusion"]),
            method=str(data["method"]),
            target=TopK(label=str(target["label"]), index=int(target["index"]), score=float(target["score"])),
            overlay_png=png,
        )
