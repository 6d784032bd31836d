"""How LocalModel lays the model out on the CPUs: runners chosen from a timed batch of one, one session."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import DEFAULT_MODEL_DIR, REPO, SAMPLES_DIR
from vitserve.export.convert import export_onnx
from vitserve.export.write import with_metadata, write_atomic
from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import ARTIFACT_FILES, ArtifactMetadata, Preprocessing
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.decode import DecodeLimits, decode_opened, open_image
from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.service.gil import CHEAP_MODEL_MS
from vitserve.service.model import LocalModel, layout, runners_for
from vitserve.service.settings import Settings


@pytest.mark.parametrize(
    ("probe_ms", "cpus", "per_run", "runners"),
    [
        (CHEAP_MODEL_MS / 2, 2, 1, 1),  # cheap: the loop is the cost, one runner
        (CHEAP_MODEL_MS, 2, 1, 2),  # costly: a single-threaded runner per CPU
        (25.0, 16, 1, 16),
        (25.0, 16, 4, 4),  # VITSERVE_INTRA_OP_THREADS=4: runners of 4 threads
        (25.0, 3, 2, 1),
    ],
)
def test_runners_follow_the_cost_of_a_batch_of_one(
    probe_ms: float, cpus: int, per_run: int, runners: int
) -> None:
    assert runners_for(probe_ms, cpus, per_run) == runners


def test_by_default_the_runners_are_chosen_by_the_rule_from_what_the_probe_measured() -> None:
    cpus = cpu_budget()
    model = LocalModel(Settings(model_dir=DEFAULT_MODEL_DIR, device="cpu"))
    try:
        info = model.info()
    finally:
        model.close()
    # One runner or several, the one session has every CPU's threads.
    assert info["intra_op_threads"] == cpus
    # Read from /proc on Linux; its value is the wide-ViT test's business (a tiny model's is noise).
    assert isinstance(info["memory_mib"], float)
    if cpus < 2:
        assert (info["runners_probe_ms"], info["batch_runners"]) == (None, 1)
        return
    probe_ms = info["runners_probe_ms"]
    assert isinstance(probe_ms, float) and probe_ms > 0
    runners = runners_for(probe_ms, cpus, 1)
    assert info["batch_runners"] == runners
    assert info["layout"] == layout(runners, cpus)


def test_set_runners_are_kept_and_share_the_cpus() -> None:
    cpus = cpu_budget()
    model = LocalModel(Settings(model_dir=DEFAULT_MODEL_DIR, device="cpu", batch_runners=2, max_batch_size=8))
    try:
        info = model.info()
        assert model.batcher.run_size == 4
    finally:
        model.close()
    assert (info["batch_runners"], info["intra_op_threads"], info["runners_probe_ms"]) == (
        2,
        max(1, cpus // 2),
        None,
    )


def test_a_costly_model_gets_a_runner_per_cpu_on_one_session_that_answers_alike_alone_or_not() -> None:
    cpus = cpu_budget()
    if cpus < 2:
        pytest.skip("one CPU: there is nothing to lay out")
    # Every model counts as costly from 0 ms: the digits model takes the path a ViT-B would.
    settings = Settings(model_dir=DEFAULT_MODEL_DIR, device="cpu", precision="fp32")
    model = LocalModel(settings, costly_ms=0.0)
    try:
        info = model.info()
        assert (info["batch_runners"], info["intra_op_threads"]) == (cpus, cpus)
        assert info["layout"] == layout(cpus, cpus)
        assert model.batcher.run_size == -(-settings.max_batch_size // cpus)
        pre = model.metadata.preprocessing
        samples = sorted(SAMPLES_DIR.glob("*.png"))[:6]
        pixels = np.stack([decode_opened(open_image(p.read_bytes(), DecodeLimits()), pre) for p in samples])

        async def go() -> tuple[np.ndarray, list[np.ndarray]]:
            alone = await model.infer(pixels[:1])  # nothing else running: a batch alone
            together = await asyncio.gather(*(model.infer(pixels[i : i + 1]) for i in range(len(pixels))))
            return alone, together

        alone, together = asyncio.run(go())
    finally:
        model.close()
    # FP32: the same image scores the same alone or among others, runners side by side.
    np.testing.assert_allclose(alone[0], together[0][0], rtol=1e-5, atol=1e-6)
    reference = OnnxClassifier(DEFAULT_MODEL_DIR, SessionOptions(precision="fp32", device="cpu"))
    assert [int(np.argmax(t[0])) for t in together] == list(
        np.argmax(reference.predict_batch(pixels), axis=1)
    )


# --- one copy of the weights -----------------------------------------------------------------------------

# A ViT whose weights (about 72 MiB in FP32) dwarf everything else a session allocates for 32x32 images:
# a second copy of them cannot hide in the noise of resident memory.
WIDE = ViTConfig(image_size=32, patch_size=8, num_classes=5, dim=512, depth=6, num_heads=8)
WIDE_PREPROCESSING = Preprocessing(image_size=32)

# Run in a fresh interpreter: resident memory before and after loading, nothing else loaded in between.
RESIDENT_GROWTH = """
import json, sys
from pathlib import Path
from vitserve.runtime.batcher import warm_up_sizes
from vitserve.runtime.memory import resident_mib
from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.service.model import LocalModel
from vitserve.service.settings import Settings

model_dir, how = Path(sys.argv[1]), sys.argv[2]
before = resident_mib()
if how == "one session":
    classifier = OnnxClassifier(model_dir, SessionOptions(device="cpu", precision="fp32"))
    classifier.warm_up(warm_up_sizes(32))
    runners = 1
else:
    model = LocalModel(Settings(model_dir=model_dir, device="cpu", precision="fp32"), costly_ms=0.0)
    runners = model.batcher.runners
print(json.dumps({"growth_mib": resident_mib() - before, "runners": runners}))
"""


def resident_growth(model_dir: Path, how: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", RESIDENT_GROWTH, str(model_dir), how],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    metadata = ArtifactMetadata(
        model_name="wide-vit",
        model_version="0.0.1",
        labels=tuple(str(i) for i in range(WIDE.num_classes)),
        preprocessing=WIDE_PREPROCESSING,
        precision="fp32",
        fused_attention=WIDE.depth,
        depth=WIDE.depth,
        source_sha256="0" * 64,
        exporter_version="test",
    )
    folder = tmp_path_factory.mktemp("wide-vit")
    exported = export_onnx(ViT(WIDE).eval(), WIDE_PREPROCESSING)
    write_atomic(with_metadata(exported, metadata), folder / ARTIFACT_FILES["fp32"])
    return folder


def test_the_runners_of_a_costly_model_hold_one_copy_of_the_weights(wide_model_dir: Path) -> None:
    if cpu_budget() < 2:
        pytest.skip("one CPU: one runner, nothing to share")
    weights_mib = (wide_model_dir / ARTIFACT_FILES["fp32"]).stat().st_size / 2**20
    one = resident_growth(wide_model_dir, "one session")
    served = resident_growth(wide_model_dir, "served")
    assert served["runners"] == cpu_budget()
    # Two copies would add the whole weights again; the arena of a few 32x32 batches is far less than half.
    assert served["growth_mib"] < one["growth_mib"] + weights_mib / 2, (served, one, weights_mib)
