"""`python -m vitserve.models.samples` rebuilds a checkpoint's samples from its held-out digits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from vitserve.models.samples import LABELS_FILE, SAMPLES_DIR, main

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "digits-vit"


def test_samples_are_one_per_class_in_every_format_and_replace_the_old_folder(tmp_path: Path) -> None:
    checkpoint = tmp_path / "digits-vit"
    checkpoint.mkdir()
    for name in ("config.json", "model.safetensors", "heldout.npz"):
        shutil.copy(COMMITTED / name, checkpoint / name)
    stale = checkpoint / SAMPLES_DIR / "stale.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")

    assert main([str(checkpoint)]) == 0

    samples = checkpoint / SAMPLES_DIR
    labels = json.loads((samples / LABELS_FILE).read_text())
    assert sorted(labels.values()) == list("0123456789")
    assert {Path(name).suffix for name in labels} == {".png", ".jpg", ".webp", ".bmp"}
    for name, label in labels.items():
        assert name.startswith(f"{label}_")
        with Image.open(samples / name) as image:
            image.load()
    # Only the new files remain, and no staging folder is left behind.
    assert sorted(p.name for p in samples.iterdir()) == sorted([*labels, LABELS_FILE])
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted(
        ["config.json", "model.safetensors", "heldout.npz", SAMPLES_DIR]
    )
