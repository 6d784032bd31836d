"""One copy of a model's weights for several CPU sessions of it: shared initializers and packed weights.

Every session ONNX Runtime builds packs each constant MatMul/Gemm weight for its kernels (MLAS), and two
sessions of one artifact hold two packed copies. Sessions built through `SharedWeights` are given the
artifact's initializers as shared initializers and one pre-packed weights container, so each weight is
packed once and every session reads that one copy.

A shared initializer stays the caller's: ONNX Runtime cannot free its raw copy once packed. The raw
copies therefore live in a read-only mapping of an unlinked temporary file, and `drop_resident_raw`
hands its pages back once the sessions are built and warm: what a run still reads (biases, norms,
embeddings) pages back in from the file, and the raw copies of the packed weights, which no run reads,
stay out of memory.
"""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

import numpy as np

from vitserve.runtime.ort_capi import ELEMENT_TYPES, CSession, OrtApiError, c_api
from vitserve.runtime.session import ModelLoadError

ALIGN = mmap.PAGESIZE  # each initializer starts on its own page: any kernel's alignment holds


class SharedWeights:
    """The initializers of one artifact in a file mapping, and the container their packed forms go to."""

    def __init__(self, path: Path) -> None:
        # Imported here: a process that never shares weights (the digits model) need not hold onnx.
        import onnx
        from onnx import numpy_helper

        self.path = path
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError, OSError, ValueError, ... by cause
            raise ModelLoadError(f"cannot read the weights of {path}: {exc}") from exc
        layout: list[tuple[str, np.dtype, tuple[int, ...], int]] = []  # name, dtype, shape, offset
        end = 0
        # Unlinked at once: the mapping keeps the file's pages until it is closed, and nothing is left behind.
        with tempfile.TemporaryFile(prefix="vitserve-weights-") as file:
            for init in model.graph.initializer:
                array = numpy_helper.to_array(init)
                if array.dtype not in ELEMENT_TYPES:
                    continue  # strings cannot be shared: those load with the graph as usual
                file.seek(end)
                file.write(array.tobytes())  # C order, whatever the array's own
                layout.append((init.name, array.dtype, array.shape, end))
                end += -(-max(array.nbytes, 1) // ALIGN) * ALIGN  # one array at a time: peak is the graph
            del model
            size = max(end, ALIGN)
            file.truncate(size)
            file.flush()
            self.mapping = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)
        self.views = [
            np.frombuffer(self.mapping, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
            for _, dtype, shape, offset in layout
        ]
        self.nbytes = sum(view.nbytes for view in self.views)
        names = [name for name, *_ in layout]
        self.values: list[tuple[str, int]] = []
        self.container = 0
        try:
            api = c_api()
            for name, view in zip(names, self.views, strict=True):
                self.values.append((name, api.tensor(view)))
            self.container = api.out("CreatePrepackedWeightsContainer")
        except OrtApiError as exc:
            self._release()
            raise ModelLoadError(f"ONNX Runtime cannot share the weights of {path}: {exc}") from exc

    def session(self, intra_op_threads: int, inter_op_threads: int, config: dict[str, str]) -> CSession:
        """A CPU session of the artifact that reads the shared initializers and packs into the container."""
        return CSession(
            self.path,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            config=config,
            initializers=self.values,
            container=self.container,
            owner=self,
        )

    def drop_resident_raw(self) -> None:
        """Hand back the raw copies' pages: what a later run reads comes back from the file."""
        self.mapping.madvise(mmap.MADV_DONTNEED)

    def _release(self) -> None:
        api = c_api()
        for _, value in self.values:
            api.release("ReleaseValue", value)
        self.values = []
        api.release("ReleasePrepackedWeightsContainer", self.container)
        self.container = 0

    def __del__(self) -> None:
        # Runs only once no session is left: each holds its SharedWeights (CSession.owner).
        if getattr(self, "values", None) or getattr(self, "container", 0):
            self._release()
