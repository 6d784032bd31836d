"""The wild evaluation set: deterministic, balanced, made only of held-out digits and evaluation fonts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from PIL import Image

from vitserve.models import fonts, wild
from vitserve.models.mnist import Digits

HELDOUT = Path(__file__).resolve().parents[2] / "models" / "digits-vit" / "heldout.npz"


def test_the_same_bytes_every_time_balanced_across_groups_and_labels() -> None:
    heldout = Digits.load(HELDOUT)
    first = wild.wild_set(heldout, per_group=20)
    assert first == wild.wild_set(heldout, per_group=20)
    counts = Counter((image.group, image.label) for image in first)
    assert set(counts) == {(g, d) for g in wild.GROUPS for d in range(10)}
    assert set(counts.values()) == {2}


def test_only_held_out_digits_and_evaluation_fonts() -> None:
    heldout = Digits.load(HELDOUT)
    eval_fonts = {f.name for f in fonts.EVAL_FONTS}
    for image in wild.wild_set(heldout, per_group=20):
        kind, _, name = image.source.partition(":")
        if kind == "mnist":
            assert heldout.labels[int(name)] == image.label
        else:
            assert kind == "font" and name in eval_fonts


def test_images_are_real_files_of_the_promised_kinds(tmp_path: Path) -> None:
    images = wild.wild_set(Digits.load(HELDOUT), per_group=10)
    wild.write_folder(images, tmp_path)
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert len(labels) == 40
    sizes: dict[str, list[tuple[int, int]]] = {g: [] for g in wild.GROUPS}
    for name, entry in labels.items():
        with Image.open(tmp_path / name) as image:
            image.load()
            sizes[entry["group"]].append(image.size)
    assert all(min(size) >= 120 for size in sizes["handwriting"] + sizes["printed"])
    assert all(min(size) >= 240 for size in sizes["small"])
    assert all(min(size) <= 24 * 4 for size in sizes["lowres"])
