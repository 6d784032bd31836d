"""ONNX Runtime's C API through ctypes, for what the Python API lacks: sessions that share their weights.

The Python `InferenceSession` cannot take a pre-packed weights container, so two sessions of one artifact
(the batch runners' and the one for a batch alone) each hold their own pre-packed copy of every MatMul
weight. The C API can: `CreateSessionWithPrepackedWeightsContainer` with the weights added as shared
initializers (`AddInitializer`) packs each of them once, into the container, for every session built
with it. The wheel ships the C library beside its Python module; this binds only what serving needs.

Functions are entries of the `OrtApi` table, reached by index. The struct is append-only, so an index
never changes across versions: each is counted from `struct OrtApi` in ONNX Runtime's public header
include/onnxruntime/core/session/onnxruntime_c_api.h, and `c_api()` checks a few of them at load time.
A run releases the GIL, so runner threads run side by side (RELEASE_GIL says which calls do).

Nothing here imports the `onnxruntime` Python package: a worker whose every session is built here
need not also hold its extension module, a second copy of ONNX Runtime (docs/latency.md).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# OrtApi::GetApi(version) gives the table of this version; 1.31 defines ORT_API_VERSION 31.
ORT_API_VERSION = 31

# Indices into struct OrtApi (onnxruntime_c_api.h), counted from its first entry, CreateStatus = 0.
CREATE_STATUS = 0
GET_ERROR_CODE = 1
GET_ERROR_MESSAGE = 2
CREATE_ENV = 3
RUN = 9
CREATE_SESSION_OPTIONS = 10
SET_SESSION_GRAPH_OPTIMIZATION_LEVEL = 23
SET_INTRA_OP_NUM_THREADS = 24
SET_INTER_OP_NUM_THREADS = 25
CREATE_RUN_OPTIONS = 39
CREATE_TENSOR_WITH_DATA_AS_ORT_VALUE = 49
GET_TENSOR_MUTABLE_DATA = 51
GET_TENSOR_ELEMENT_TYPE = 60
GET_DIMENSIONS_COUNT = 61
GET_DIMENSIONS = 62
GET_TENSOR_TYPE_AND_SHAPE = 65
CREATE_CPU_MEMORY_INFO = 69
ALLOCATOR_FREE = 76
GET_ALLOCATOR_WITH_DEFAULT_OPTIONS = 78
RELEASE_ENV = 92
RELEASE_STATUS = 93
RELEASE_MEMORY_INFO = 94
RELEASE_SESSION = 95
RELEASE_VALUE = 96
RELEASE_RUN_OPTIONS = 97
RELEASE_TENSOR_TYPE_AND_SHAPE_INFO = 99
RELEASE_SESSION_OPTIONS = 100
SESSION_GET_MODEL_METADATA = 111
MODEL_METADATA_LOOKUP_CUSTOM_METADATA_MAP = 116
RELEASE_MODEL_METADATA = 118
GET_AVAILABLE_PROVIDERS = 125
RELEASE_AVAILABLE_PROVIDERS = 126
ADD_SESSION_CONFIG_ENTRY = 130
ADD_INITIALIZER = 150
ADD_RUN_CONFIG_ENTRY = 165
CREATE_PREPACKED_WEIGHTS_CONTAINER = 166
RELEASE_PREPACKED_WEIGHTS_CONTAINER = 167
CREATE_SESSION_WITH_PREPACKED_WEIGHTS_CONTAINER = 168

ORT_FAIL = 1  # OrtErrorCode
ORT_ENABLE_ALL = 99  # GraphOptimizationLevel
ORT_LOGGING_LEVEL_WARNING = 2
ORT_ARENA_ALLOCATOR = 1  # OrtAllocatorType
ORT_MEM_TYPE_DEFAULT = 0  # OrtMemType
# ONNXTensorElementDataType of each numpy dtype an initializer or an input may have.
ELEMENT_TYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.uint16): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.bool_): 9,
    np.dtype(np.float16): 10,
    np.dtype(np.float64): 11,
    np.dtype(np.uint32): 12,
    np.dtype(np.uint64): 13,
}
FLOAT = ELEMENT_TYPES[np.dtype(np.float32)]

_p = ctypes.c_void_p
_pp = ctypes.POINTER(ctypes.c_void_p)
_status = ctypes.c_void_p  # OrtStatus*: NULL on success

# (index, restype, argtypes) of each function this module calls.
SIGNATURES: dict[str, tuple[int, object, tuple[object, ...]]] = {
    "CreateStatus": (CREATE_STATUS, _p, (ctypes.c_int, ctypes.c_char_p)),
    "GetErrorCode": (GET_ERROR_CODE, ctypes.c_int, (_p,)),
    "GetErrorMessage": (GET_ERROR_MESSAGE, ctypes.c_char_p, (_p,)),
    "CreateEnv": (CREATE_ENV, _status, (ctypes.c_int, ctypes.c_char_p, _pp)),
    "Run": (
        RUN,
        _status,
        (
            _p,
            _p,
            ctypes.POINTER(ctypes.c_char_p),
            _pp,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_size_t,
            _pp,
        ),
    ),
    "CreateSessionOptions": (CREATE_SESSION_OPTIONS, _status, (_pp,)),
    "SetSessionGraphOptimizationLevel": (SET_SESSION_GRAPH_OPTIMIZATION_LEVEL, _status, (_p, ctypes.c_int)),
    "SetIntraOpNumThreads": (SET_INTRA_OP_NUM_THREADS, _status, (_p, ctypes.c_int)),
    "SetInterOpNumThreads": (SET_INTER_OP_NUM_THREADS, _status, (_p, ctypes.c_int)),
    "CreateRunOptions": (CREATE_RUN_OPTIONS, _status, (_pp,)),
    "CreateTensorWithDataAsOrtValue": (
        CREATE_TENSOR_WITH_DATA_AS_ORT_VALUE,
        _status,
        (_p, _p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int64), ctypes.c_size_t, ctypes.c_int, _pp),
    ),
    "GetTensorMutableData": (GET_TENSOR_MUTABLE_DATA, _status, (_p, _pp)),
    "GetTensorElementType": (GET_TENSOR_ELEMENT_TYPE, _status, (_p, ctypes.POINTER(ctypes.c_int))),
    "GetDimensionsCount": (GET_DIMENSIONS_COUNT, _status, (_p, ctypes.POINTER(ctypes.c_size_t))),
    "GetDimensions": (GET_DIMENSIONS, _status, (_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_size_t)),
    "GetTensorTypeAndShape": (GET_TENSOR_TYPE_AND_SHAPE, _status, (_p, _pp)),
    "CreateCpuMemoryInfo": (CREATE_CPU_MEMORY_INFO, _status, (ctypes.c_int, ctypes.c_int, _pp)),
    "AllocatorFree": (ALLOCATOR_FREE, _status, (_p, _p)),
    "GetAllocatorWithDefaultOptions": (GET_ALLOCATOR_WITH_DEFAULT_OPTIONS, _status, (_pp,)),
    "ReleaseEnv": (RELEASE_ENV, None, (_p,)),
    "ReleaseStatus": (RELEASE_STATUS, None, (_p,)),
    "ReleaseMemoryInfo": (RELEASE_MEMORY_INFO, None, (_p,)),
    "ReleaseSession": (RELEASE_SESSION, None, (_p,)),
    "ReleaseValue": (RELEASE_VALUE, None, (_p,)),
    "ReleaseRunOptions": (RELEASE_RUN_OPTIONS, None, (_p,)),
    "ReleaseTensorTypeAndShapeInfo": (RELEASE_TENSOR_TYPE_AND_SHAPE_INFO, None, (_p,)),
    "ReleaseSessionOptions": (RELEASE_SESSION_OPTIONS, None, (_p,)),
    "SessionGetModelMetadata": (SESSION_GET_MODEL_METADATA, _status, (_p, _pp)),
    "ModelMetadataLookupCustomMetadataMap": (
        MODEL_METADATA_LOOKUP_CUSTOM_METADATA_MAP,
        _status,
        (_p, _p, ctypes.c_char_p, _pp),
    ),
    "ReleaseModelMetadata": (RELEASE_MODEL_METADATA, None, (_p,)),
    "GetAvailableProviders": (
        GET_AVAILABLE_PROVIDERS,
        _status,
        (ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)), ctypes.POINTER(ctypes.c_int)),
    ),
    "ReleaseAvailableProviders": (
        RELEASE_AVAILABLE_PROVIDERS,
        _status,
        (ctypes.POINTER(ctypes.c_char_p), ctypes.c_int),
    ),
    "AddSessionConfigEntry": (ADD_SESSION_CONFIG_ENTRY, _status, (_p, ctypes.c_char_p, ctypes.c_char_p)),
    "AddInitializer": (ADD_INITIALIZER, _status, (_p, ctypes.c_char_p, _p)),
    "AddRunConfigEntry": (ADD_RUN_CONFIG_ENTRY, _status, (_p, ctypes.c_char_p, ctypes.c_char_p)),
    "CreatePrepackedWeightsContainer": (CREATE_PREPACKED_WEIGHTS_CONTAINER, _status, (_pp,)),
    "ReleasePrepackedWeightsContainer": (RELEASE_PREPACKED_WEIGHTS_CONTAINER, None, (_p,)),
    "CreateSessionWithPrepackedWeightsContainer": (
        CREATE_SESSION_WITH_PREPACKED_WEIGHTS_CONTAINER,
        _status,
        (_p, ctypes.c_char_p, _p, _p, _pp),
    ),
}


# The calls that take long release the GIL (ctypes' C calling convention). Every other call is short and
# keeps it: a thread that gave the GIL up would wait for it again, up to the switch interval, behind
# the event loop and decoding threads, after each of the dozen calls around every run.
RELEASE_GIL = frozenset({"Run", "CreateSessionWithPrepackedWeightsContainer"})


class OrtApiError(RuntimeError):
    """An ONNX Runtime C API call failed; the message is ONNX Runtime's own."""


class _ApiBase(ctypes.Structure):
    _fields_ = [
        ("GetApi", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)),
        ("GetVersionString", ctypes.CFUNCTYPE(ctypes.c_char_p)),
    ]


def library_path() -> Path:
    """The C library the onnxruntime wheel ships beside its Python module, found without importing it."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise OrtApiError("onnxruntime is not installed")
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    found = sorted(capi.glob("libonnxruntime.so.*.*.*"))
    if len(found) != 1:
        raise OrtApiError(f"the onnxruntime wheel has {len(found)} C libraries in {capi}, not one")
    return found[0]


def imported_python_module() -> Any:
    """The onnxruntime Python module where this process has imported it (never imported here), else None."""
    return sys.modules.get("onnxruntime")


class CApi:
    """The OrtApi table of the wheel's C library: typed calls, and statuses raised as OrtApiError."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        lib.OrtGetApiBase.restype = ctypes.POINTER(_ApiBase)
        base = lib.OrtGetApiBase().contents
        self.version = base.GetVersionString().decode()
        shipped = path.name.removeprefix("libonnxruntime.so.")
        module = imported_python_module()
        module_version = None if module is None else str(module.__version__)
        if self.version != shipped or module_version not in (None, self.version):
            raise OrtApiError(
                f"{path} is ONNX Runtime {self.version}, shipped as {shipped}, "
                f"the Python module {module_version}"
            )
        table = base.GetApi(ORT_API_VERSION)
        if not table:
            raise OrtApiError(f"ONNX Runtime {self.version} has no C API of version {ORT_API_VERSION}")
        entries = ctypes.cast(table, ctypes.POINTER(ctypes.c_void_p))
        self._lib = lib  # keeps the library loaded while the functions live
        self._fn = {}
        for name, (index, restype, argtypes) in SIGNATURES.items():
            prototype = ctypes.CFUNCTYPE if name in RELEASE_GIL else ctypes.PYFUNCTYPE
            self._fn[name] = prototype(restype, *argtypes)(entries[index])  # type: ignore[arg-type]
        self._check_table()
        self.env = self.out("CreateEnv", ORT_LOGGING_LEVEL_WARNING, b"vitserve")
        self.cpu_memory = self.out("CreateCpuMemoryInfo", ORT_ARENA_ALLOCATOR, ORT_MEM_TYPE_DEFAULT)
        self.allocator = self.out("GetAllocatorWithDefaultOptions")

    def _check_table(self) -> None:
        """A wrong index calls the wrong function: check entries whose answers are known before use."""
        status = self._fn["CreateStatus"](ORT_FAIL, b"vitserve probe")
        try:
            code, message = self._fn["GetErrorCode"](status), self._fn["GetErrorMessage"](status)
        finally:
            self._fn["ReleaseStatus"](status)
        if (code, message) != (ORT_FAIL, b"vitserve probe"):
            raise OrtApiError(f"the OrtApi table of {self.version} does not match its header (status)")
        names = ctypes.POINTER(ctypes.c_char_p)()
        count = ctypes.c_int()
        self.call("GetAvailableProviders", ctypes.byref(names), ctypes.byref(count))
        providers = [names[i].decode() for i in range(count.value)]
        self.call("ReleaseAvailableProviders", names, count)
        # The Python module's list where it is imported; else the shape every build's list has.
        module = imported_python_module()
        expected = providers if module is None else module.get_available_providers()
        well_formed = providers[-1:] == ["CPUExecutionProvider"] and all(
            name.endswith("ExecutionProvider") for name in providers
        )
        if providers != expected or not well_formed:
            raise OrtApiError(f"the OrtApi table of {self.version} does not match its header (providers)")

    def call(self, name: str, *args: object) -> None:
        status = self._fn[name](*args)
        if status:
            message = self._fn["GetErrorMessage"](status).decode(errors="replace")
            self._fn["ReleaseStatus"](status)
            raise OrtApiError(message)

    def out(self, name: str, *args: object) -> int:
        """Call a function whose last argument is an out-pointer, and return what it wrote."""
        result = ctypes.c_void_p()
        self.call(name, *args, ctypes.byref(result))
        if not result.value:
            raise OrtApiError(f"{name} returned no object")
        return result.value

    def release(self, name: str, handle: int | None) -> None:
        if handle:
            self._fn[name](handle)

    def tensor(self, array: np.ndarray) -> int:
        """An OrtValue over a C-contiguous array's own memory; the array must outlive it."""
        if not array.flags.c_contiguous:
            raise ValueError("a tensor over numpy memory needs a C-contiguous array")
        dims = (ctypes.c_int64 * array.ndim)(*array.shape)
        return self.out(
            "CreateTensorWithDataAsOrtValue",
            self.cpu_memory,
            array.ctypes.data,
            array.nbytes,
            dims,
            array.ndim,
            ELEMENT_TYPES[array.dtype],
        )

    def float_array(self, value: int) -> np.ndarray:
        """A copy of a float32 tensor OrtValue's data, in its shape."""
        info = self.out("GetTensorTypeAndShape", value)
        try:
            element = ctypes.c_int()
            self.call("GetTensorElementType", info, ctypes.byref(element))
            if element.value != FLOAT:
                raise OrtApiError(f"expected a float32 output, got ONNX element type {element.value}")
            count = ctypes.c_size_t()
            self.call("GetDimensionsCount", info, ctypes.byref(count))
            dims = (ctypes.c_int64 * count.value)()
            self.call("GetDimensions", info, dims, count.value)
        finally:
            self.release("ReleaseTensorTypeAndShapeInfo", info)
        shape = tuple(dims)
        data = self.out("GetTensorMutableData", value)
        flat = np.ctypeslib.as_array(
            ctypes.cast(data, ctypes.POINTER(ctypes.c_float)), (int(np.prod(shape)),)
        )
        return flat.reshape(shape).copy()


@functools.cache
def c_api() -> CApi:
    """The process's one C API binding (ONNX Runtime allows one environment per process)."""
    return CApi(library_path())


class CSession:
    """One session built through the C API; `run` feeds one input and returns one float32 output."""

    def __init__(
        self,
        path: Path,
        *,
        intra_op_threads: int,
        inter_op_threads: int,
        config: dict[str, str],
        initializers: Iterable[tuple[str, int]],
        container: int,
        owner: object,
    ) -> None:
        """owner: what holds the initializers and the container, kept alive as long as this session."""
        self.owner = owner
        self.handle = 0
        api = self.api = c_api()
        options = api.out("CreateSessionOptions")
        try:
            api.call("SetIntraOpNumThreads", options, intra_op_threads)
            api.call("SetInterOpNumThreads", options, inter_op_threads)
            api.call("SetSessionGraphOptimizationLevel", options, ORT_ENABLE_ALL)
            for key, value in config.items():
                api.call("AddSessionConfigEntry", options, key.encode(), value.encode())
            for name, tensor in initializers:
                api.call("AddInitializer", options, name.encode(), tensor)
            self.handle = api.out(
                "CreateSessionWithPrepackedWeightsContainer", api.env, str(path).encode(), options, container
            )
        finally:
            api.release("ReleaseSessionOptions", options)

    def custom_metadata(self, key: str) -> str | None:
        """The model's metadata_props entry for key, None where absent."""
        api = self.api
        meta = api.out("SessionGetModelMetadata", self.handle)
        try:
            value = ctypes.c_void_p()
            api.call(
                "ModelMetadataLookupCustomMetadataMap", meta, api.allocator, key.encode(), ctypes.byref(value)
            )
            if not value.value:
                return None
            try:
                return ctypes.string_at(value.value).decode()
            finally:
                api.call("AllocatorFree", api.allocator, value)
        finally:
            api.release("ReleaseModelMetadata", meta)

    def run(
        self, input_name: str, array: np.ndarray, output_name: str, run_config: dict[str, str] | None = None
    ) -> np.ndarray:
        api = self.api
        run_options = None
        tensor = api.tensor(array)
        output = ctypes.c_void_p()
        try:
            if run_config:
                run_options = api.out("CreateRunOptions")
                for key, value in run_config.items():
                    api.call("AddRunConfigEntry", run_options, key.encode(), value.encode())
            input_names = (ctypes.c_char_p * 1)(input_name.encode())
            output_names = (ctypes.c_char_p * 1)(output_name.encode())
            inputs = (ctypes.c_void_p * 1)(tensor)
            api.call(
                "Run", self.handle, run_options, input_names, inputs, 1, output_names, 1, ctypes.byref(output)
            )
            return api.float_array(output.value) if output.value else np.empty(0, dtype=np.float32)
        finally:
            api.release("ReleaseValue", output.value)
            api.release("ReleaseValue", tensor)
            api.release("ReleaseRunOptions", run_options)

    def close(self) -> None:
        self.api.release("ReleaseSession", self.handle)
        self.handle = 0

    def __del__(self) -> None:
        if getattr(self, "handle", 0):
            self.close()
