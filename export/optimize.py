"""Fused attention on the token layout: each block's q, k, v split straight from its qkv projection.

torch's exporter feeds ONNX `Attention` 4-D (N, heads, T, head_dim) tensors: a Reshape, a 5-D Transpose
and three Slice+Squeeze before it, a Transpose and a Reshape after it. ONNX `Attention` also takes 3-D
(N, T, heads * head_dim) inputs with the head count as attributes, which is the layout the projections
already have, so the transposes go away (what that saves: docs/benchmarks.md, model-only) and the
arithmetic is unchanged. A graph that is not exactly the exporter's pattern is left as
it is; the parity gates run on the result either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

# The exporter's (3, N, heads, T, head_dim) order of the qkv tensor, and back to (N, T, heads, head_dim).
QKV_PERM = [2, 0, 3, 1, 4]
HEADS_PERM = [0, 2, 1, 3]


@dataclass(frozen=True)
class _Match:
    attention: onnx.NodeProto
    qkv: str  # the (N, T, 3 * dim) projection output the pattern starts from
    out: str  # the (N, T, dim) tensor the pattern ends in
    heads: int
    dim: int
    removed: tuple[onnx.NodeProto, ...]


class _Graph:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.graph_outputs = {o.name for o in graph.output}

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type or name in self.graph_outputs:
            return None
        return users[0]

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def holds(self, name: str, values: list[int]) -> bool:
        """Whether `name` is a constant equal to `values`."""
        constant = self.constants.get(name)
        return constant is not None and np.array_equal(constant, values)


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _match(g: _Graph, attention: onnx.NodeProto) -> _Match | None:
    """The exporter's pattern around one 4-D Attention node, or None when anything differs."""
    if attention.domain not in ("", "ai.onnx") or len(attention.input) != 3 or len(attention.output) != 1:
        return None
    if any(a.name in ("q_num_heads", "kv_num_heads") for a in attention.attribute):
        return None  # already on the token layout
    found = [g.made_by(name, "Squeeze") for name in attention.input]
    squeezes = [s for s in found if s is not None]
    slices = [s for s in (g.made_by(q.input[0], "Slice") for q in squeezes) if s is not None]
    if len(slices) != 3 or len({s.input[0] for s in slices}) != 1:
        return None
    for index, (squeeze, sliced) in enumerate(zip(squeezes, slices, strict=True)):
        steps = len(sliced.input) <= 4 or g.holds(sliced.input[4], [1])
        axes = len(sliced.input) <= 3 or g.holds(sliced.input[3], [0])
        if not (
            steps
            and axes
            and g.holds(sliced.input[1], [index])
            and g.holds(sliced.input[2], [index + 1])
            and len(squeeze.input) > 1
            and g.holds(squeeze.input[1], [0])
        ):
            return None
    transpose = g.made_by(slices[0].input[0], "Transpose")
    if transpose is None or _perm(transpose) != QKV_PERM:
        return None
    if len(g.consumers.get(transpose.output[0], [])) != 3:
        return None
    reshape = g.made_by(transpose.input[0], "Reshape")
    shape = g.constant(reshape.input[1]) if reshape is not None else None
    if reshape is None or shape is None or shape.shape != (5,) or shape[2] != 3 or min(shape[3:]) <= 0:
        return None
    heads, head_dim = int(shape[3]), int(shape[4])
    back = g.only_consumer(attention.output[0], "Transpose")
    if back is None or _perm(back) != HEADS_PERM:
        return None
    merge = g.only_consumer(back.output[0], "Reshape")
    merged = g.constant(merge.input[1]) if merge is not None else None
    if merge is None or merged is None or merged.shape != (3,) or merged[2] != heads * head_dim:
        return None
    if any(len(g.consumers.get(n.output[0], [])) != 1 for n in (reshape, *slices, *squeezes)):
        return None
    removed = (reshape, transpose, *slices, *squeezes, back, merge)
    return _Match(attention, reshape.input[0], merge.output[0], heads, heads * head_dim, removed)


def attention_on_tokens(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with every matched Attention fed (N, T, dim) tensors; and how many were."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out.graph)
    matches = [m for n in out.graph.node if n.op_type == "Attention" for m in [_match(g, n)] if m]
    removed = {id(node) for m in matches for node in m.removed}
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for m in matches:
        prefix = m.attention.name or m.out
        sizes = numpy_helper.from_array(np.array([m.dim] * 3, dtype=np.int64), f"{prefix}/qkv_sizes")
        out.graph.initializer.append(sizes)
        q, k, v = (f"{prefix}/{part}" for part in "qkv")
        split = helper.make_node("Split", [m.qkv, sizes.name], [q, k, v], name=f"{prefix}/split", axis=-1)
        attention = helper.make_node("Attention", [q, k, v], [m.out], name=m.attention.name)
        attention.attribute.extend(m.attention.attribute)
        attention.attribute.extend(
            [helper.make_attribute("q_num_heads", m.heads), helper.make_attribute("kv_num_heads", m.heads)]
        )
        replaced[id(m.attention)] = [split, attention]
    nodes = [
        new for node in out.graph.node for new in replaced.get(id(node), [node]) if id(node) not in removed
    ]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {name for node in out.graph.node for name in node.input}
    kept = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out, len(matches)
