"""The batch-invariance gate and the token-layout attention: an image's scores never depend on its batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from vitserve.bench.model import dynamic_int8
from vitserve.export.config import ExportConfig, Tolerances
from vitserve.export.convert import export_onnx
from vitserve.export.errors import BatchVarianceError
from vitserve.export.fusion import check_fusion
from vitserve.export.optimize import attention_on_tokens
from vitserve.export.verify import (
    EvalData,
    batch_variance,
    gate,
    make_session,
    mixed_batches,
    random_pixels,
)
from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import INPUT_NAME, Preprocessing

TINY = ViTConfig(image_size=32, patch_size=8, num_classes=5, dim=32, depth=2, num_heads=2)
PREPROCESSING = Preprocessing(image_size=32)
CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def exported() -> onnx.ModelProto:
    torch.manual_seed(0)
    return export_onnx(ViT(TINY).eval(), PREPROCESSING)


def logits(model: onnx.ModelProto, pixels: np.ndarray) -> np.ndarray:
    return make_session(model.SerializeToString(), CPU, threads=2).run(None, {INPUT_NAME: pixels})[0]


def test_token_layout_attention_drops_the_transposes_and_keeps_every_bit(exported: onnx.ModelProto) -> None:
    tokens, moved = attention_on_tokens(exported)
    assert moved == TINY.depth
    check_fusion(tokens, TINY.depth)  # still one fused Attention per block, no Softmax
    ops = [n.op_type for n in tokens.graph.node]
    # Left: the input's NHWC->NCHW and the patch grid's flatten; none around attention.
    assert ops.count("Transpose") == 2 and "Squeeze" not in ops
    pixels = random_pixels(32, 5, seed=3).pixels
    np.testing.assert_array_equal(logits(tokens, pixels), logits(exported, pixels))
    assert attention_on_tokens(tokens)[1] == 0  # already on the token layout: nothing to match


def test_a_graph_off_the_pattern_is_left_as_it_is(exported: onnx.ModelProto) -> None:
    changed = onnx.ModelProto()
    changed.CopyFrom(exported)
    for node in changed.graph.node:
        if node.op_type == "Transpose" and len(node.attribute[0].ints) == 5:
            del node.attribute[0].ints[:]
            node.attribute[0].ints.extend([2, 0, 1, 3, 4])  # another order: not the q, k, v it splits
    untouched, moved = attention_on_tokens(changed)
    assert moved == 0 and untouched == changed


@pytest.mark.parametrize("sizes", [(2,), (2, 3, 8, 32), (5, 17)])
def test_mixed_batches_hold_every_probe_once_per_size_beside_partners(sizes: tuple[int, ...]) -> None:
    batches = mixed_batches(probes=8, pool=40, sizes=sizes, seed=0)
    assert sorted({len(b) for b in batches}) == sorted(set(sizes))
    for size in sizes:
        held = np.concatenate([b[b < 8] for b in batches if len(b) == size])
        assert sorted(held.tolist()) == list(range(8))
    assert all((b >= 8).any() for b in batches)  # never a batch of probes alone


def test_fp32_on_the_cpu_is_bitwise_batch_invariant(exported: onnx.ModelProto) -> None:
    pixels = random_pixels(32, 40, seed=4).pixels
    variance = batch_variance(attention_on_tokens(exported)[0], CPU, pixels, ExportConfig())
    assert (variance.max_abs_logit, variance.top1_changes) == (0.0, 0)
    assert variance.batches == 8 + 8 + 2 + 1  # sizes 2, 3, 8, 32: 1, 1, 4 and 8 probes a batch


def test_dynamic_int8_is_refused_by_the_gate(exported: onnx.ModelProto) -> None:
    """The quantisation vitserve shipped before: activation scales from each run's whole batch."""
    dynamic = dynamic_int8(attention_on_tokens(exported)[0])
    pixels = random_pixels(32, 40, seed=5).pixels
    reference = logits(exported, pixels)
    data = EvalData(pixels, reference.argmax(1), "random, labelled by the FP32 graph")
    # What the gate guards against, seen directly: one image alone and beside others.
    assert np.abs(logits(dynamic, pixels[:1])[0] - logits(dynamic, pixels[:16])[0]).max() > 0
    # Parity limits opened wide: a random-weight model's near-ties are not what this test is about.
    config = ExportConfig(tolerances=Tolerances(int8_top1_agreement=0.0, int8_accuracy_drop=1.0))
    with pytest.raises(BatchVarianceError, match="int8 batch-invariance gate failed") as info:
        gate("int8", dynamic, reference, data, config)
    assert info.value.max_abs > 0 and info.value.limit == 0.0
