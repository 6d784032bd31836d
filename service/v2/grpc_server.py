"""`inference.GRPCInferenceService` on grpcio's asyncio server, in the API worker beside the HTTP routes.

It runs on the worker's own event loop, so ModelInfer reaches the same classify flow, admission and
batches as /classify. Its classes come from grpc_predict_v2.proto (grpc_predict_v2_pb2*.py, generated).
Failures map to gRPC codes as errors.py says; a message over VITSERVE_MAX_BODY_BYTES is refused by
grpcio itself with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from vitserve.service.flow.errors import OVERLOADED, ApiError
from vitserve.service.v2 import grpc_predict_v2_pb2 as pb
from vitserve.service.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from vitserve.service.v2.errors import V2Error, bad_request, from_api_error
from vitserve.service.v2.infer import infer
from vitserve.service.v2.tensors import (
    DTYPES,
    InferRequest,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    check_datatype,
    check_integer_range,
    check_shape,
    element_count,
    typed_from_raw,
)
from vitserve.service.web.door import hold_refusal

if TYPE_CHECKING:
    from vitserve.service.v2.protocol import V2Protocol

log = logging.getLogger(__name__)
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"  # the metrics' route label for ModelInfer
# InferTensorContents' field for each datatype's typed (non-raw) contents; FP16 has none (raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
ACCEPTORS = 8  # gRPC servers per worker on one port: calls accepted per turn of the event loop (GrpcServer)
OK_STATUS = 200  # what vitserve_requests' code label records for an answered call, as for HTTP


def parameter_value(parameter: Any) -> Any:
    """An InferParameter's one value (bool, int or str), None if it holds none."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def parameters_of(parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def typed_contents(
    name: str, datatype: str, shape: tuple[int, ...], contents: Any
) -> np.ndarray | tuple[bytes, ...]:
    """A tensor's typed contents -> its flat elements, checked against the shape's element count."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise bad_request(f"input '{name}': {datatype} data must be sent in raw_input_contents")
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise bad_request(
            f"input '{name}': shape {list(shape)} needs {count} element(s), {field} holds {len(values)}"
        )
    if datatype == "BYTES":
        return tuple(values)
    array = np.asarray(values)
    check_integer_range(name, datatype, array)
    return array.astype(DTYPES[datatype])


def parse_grpc_request(request: Any) -> InferRequest:
    """A ModelInferRequest -> the same InferRequest a REST body parses to."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad_request(f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} input(s)")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        datatype = check_datatype(name, tensor.datatype)
        shape = check_shape(name, list(tensor.shape))
        if raw:
            if tensor.HasField("contents"):
                raise bad_request(f"input '{name}' has contents, and the request raw_input_contents")
            data = typed_from_raw(name, datatype, shape, raw[i])
        else:
            data = typed_contents(name, datatype, shape, tensor.contents)
        inputs.append(InputTensor(name, datatype, shape, data, parameters_of(tensor.parameters)))
    outputs = tuple(RequestedOutput(o.name, parameters_of(o.parameters)) for o in request.outputs)
    return InferRequest(request.id, tuple(inputs), outputs, parameters_of(request.parameters))


def infer_response(name: str, version: str, request_id: str, outputs: list[OutputTensor]) -> Any:
    """Outputs as raw_output_contents, as Triton answers them."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id)
    for output in outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
        response.raw_output_contents.append(output.raw())
    return response


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six calls of the protocol, answered from the worker's V2Protocol."""

    def __init__(self, v2: V2Protocol) -> None:
        self.v2 = v2
        self.in_progress = 0  # ModelInfer calls under way; touched from the event loop only

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.v2.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        await self._find(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.v2.ready())

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(**self.v2.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        await self._find(request.name, request.version, context)
        meta = self.v2.spec.metadata()
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """Counted in vitserve_requests by the HTTP status of the same outcome (200 when answered)."""
        metrics = self.v2.flow.metrics
        started = time.perf_counter()
        self.in_progress += 1
        try:
            response = await self._infer(request)
        except ApiError as exc:  # admission
            error = from_api_error(exc)
        except V2Error as exc:
            error = exc
        else:
            metrics.request_done(INFER_METHOD, OK_STATUS, time.perf_counter() - started)
            return response
        finally:
            self.in_progress -= 1
        if error.status == OVERLOADED:  # held as REST's refusals are, its place already given back
            await hold_refusal(self.v2.settings.shed_delay_ms / 1000)
        metrics.rejected(error.reason)  # counted once, here, where its status is sent
        metrics.request_done(INFER_METHOD, error.status, time.perf_counter() - started)
        await context.abort(grpc.StatusCode[error.grpc_code], error.message)

    async def _infer(self, request: Any) -> Any:
        v2, flow = self.v2, self.v2.flow
        v2.spec.find(request.model_name, request.model_version)
        # The front door's rule for REST: calls under way count against the image limit too.
        if not flow.has_room(self.in_progress - 1):
            raise flow.overloaded()
        job = v2.spec.job(parse_grpc_request(request))
        outputs = await infer(flow, job)
        return infer_response(v2.spec.name, v2.spec.version, request.id, outputs)

    async def _find(self, name: str, version: str, context: Any) -> None:
        try:
            self.v2.spec.find(name, version)
        except V2Error as exc:
            await context.abort(grpc.StatusCode[exc.grpc_code], exc.message)


class GrpcServer:
    """grpcio's asyncio servers for one API worker, all on one port (SO_REUSEPORT), as several workers are.

    A grpcio asyncio server requests its next call only after the event loop has taken the last one;
    under many concurrent calls they reached the classify flow one at a time, and greedy batching
    could batch only what had arrived, where HTTP's requests arrive together. ACCEPTORS servers on
    the same event loop and port, each taking the connections the kernel gives it, let as many calls
    in at once (from different connections: one connection's calls are its server's).
    """

    def __init__(self, v2: V2Protocol) -> None:
        self.v2 = v2
        self.started = False
        limit = v2.settings.max_body_bytes + 64 * 1024  # the images plus the request's framing
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        service = InferenceService(v2)  # one count of calls in progress for the admission rule
        self.servers = [
            grpc.aio.server(options=[*options, ("grpc.so_reuseport", 1)]) for _ in range(ACCEPTORS)
        ]
        for server in self.servers:
            pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)

    async def start(self, host: str, port: int) -> None:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for server in self.servers:
            if server.add_insecure_port(address) == 0:
                raise RuntimeError(f"gRPC could not listen on {address}")
        for server in self.servers:
            await server.start()
        self.started = True
        log.info("gRPC (inference.GRPCInferenceService) listening on %s", address)

    async def stop(self, grace_s: float) -> None:
        self.started = False
        await asyncio.gather(*(server.stop(grace_s) for server in self.servers))
