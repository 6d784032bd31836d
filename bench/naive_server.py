"""The baseline a team would hand-roll: FastAPI + ONNX Runtime, one image per request, no batching.

Same artifact, same decoding and the same thread budget as vitserve, so that the benchmark isolates
what batching and the serving design buy. Run: python -m vitserve.bench.naive_server --model-dir D --port P
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from vitserve.runtime.decode import DecodeError, DecodeLimits, decode_image
from vitserve.runtime.predictions import top_k_predictions
from vitserve.runtime.session import OnnxClassifier, SessionOptions


def build_app(classifier: OnnxClassifier) -> FastAPI:
    app = FastAPI()
    meta = classifier.metadata
    limits = DecodeLimits()

    @app.get("/readyz")
    def readyz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    def classify_one(data: bytes) -> JSONResponse:
        try:
            pixels = decode_image(data, meta.preprocessing, limits)
        except DecodeError as exc:
            return JSONResponse({"error": exc.code, "message": str(exc)}, status_code=400)
        (prediction,) = top_k_predictions(classifier.predict_batch(pixels[None]), meta.labels, 5)
        top_k = [{"label": t.label, "index": t.index, "score": t.score} for t in prediction.top_k]
        model = {"name": meta.model_name, "version": meta.model_version}
        return JSONResponse(
            {"label": prediction.label, "score": prediction.score, "top_k": top_k, "model": model}
        )

    @app.post("/classify")
    async def classify(image: UploadFile) -> JSONResponse:
        # The usual hand-rolled shape: a multipart upload, blocking work in Starlette's thread pool,
        # one image per call, the same JSON answer as vitserve's.
        return await run_in_threadpool(classify_one, await image.read())

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    options = SessionOptions(precision=args.precision, device="cpu", intra_op_threads=args.threads)
    classifier = OnnxClassifier(args.model_dir, options)
    uvicorn.run(build_app(classifier), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
