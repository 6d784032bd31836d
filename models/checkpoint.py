"""One entry point for every checkpoint vitserve can load: its own, Hugging Face folders, timm files.

vitserve's own format is a folder with `config.json` (kind "vitserve-checkpoint": the ViT config,
labels, preprocessing, name, version) and `model.safetensors` (the ViT's state dict).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import Preprocessing

CHECKPOINT_KIND = "vitserve-checkpoint"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """The checkpoint cannot be read or does not map onto the ViT."""


@dataclass(frozen=True)
class LoadedModel:
    """A ViT with everything that must travel with it into an artifact."""

    model: ViT
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    name: str
    version: str
    source_sha256: str


def sha256_of(path: Path) -> str:
    """Digest of a file, or of a folder's files in name order (so a folder has one identity)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    out_dir: Path,
    model: ViT,
    labels: tuple[str, ...] | list[str],
    preprocessing: Preprocessing,
    name: str,
    version: str,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "kind": CHECKPOINT_KIND,
        "name": name,
        "version": version,
        "vit": model.config.to_dict(),
        "labels": list(labels),
        "preprocessing": preprocessing.to_dict(),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE))


def is_vitserve_checkpoint(path: Path) -> bool:
    config = path / CONFIG_FILE
    if not (path.is_dir() and config.is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("kind") == CHECKPOINT_KIND
    except json.JSONDecodeError:
        return False


def is_timm_hub_folder(path: Path) -> bool:
    """timm's Hub folders also hold a config.json, but with "architecture" instead of "model_type"."""
    config = path / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and "architecture" in data and "model_type" not in data


def load_vitserve_checkpoint(path: Path) -> LoadedModel:
    config = json.loads((path / CONFIG_FILE).read_text())
    try:
        vit_config = ViTConfig.from_dict(config["vit"])
        model = ViT(vit_config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: bad ViT config: {exc}") from exc
    load_state_dict_strict(model, read_weights(path / WEIGHTS_FILE))
    labels = tuple(config["labels"])
    if len(labels) != vit_config.num_classes:
        raise CheckpointError(f"{path}: {len(labels)} labels for {vit_config.num_classes} classes")
    return LoadedModel(
        model=model.eval(),
        labels=labels,
        preprocessing=Preprocessing.from_dict(config["preprocessing"]),
        name=str(config["name"]),
        version=str(config["version"]),
        source_sha256=sha256_of(path / WEIGHTS_FILE),
    )


# Weights files a Hugging Face or timm Hub folder may hold, in order of preference.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def find_weights(folder: Path, names: tuple[str, ...] = HUB_WEIGHT_FILES) -> Path:
    """The first of `names` in `folder`; sharded checkpoints are refused by name."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("*.index.json")):
        raise CheckpointError(f"{folder}: sharded checkpoints are not supported; save with one weights file")
    raise CheckpointError(f"{folder}: no weights file ({' or '.join(names)})")


def read_weights(file: Path) -> dict[str, Any]:
    """The dict stored in a .safetensors or torch (.pth, .pt, .bin) file, never running pickled code."""
    if file.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(
            f"{file}: unknown weights format {file.suffix!r} ({', '.join(WEIGHT_SUFFIXES)})"
        )
    try:
        if file.suffix == ".safetensors":
            return dict(load_file(str(file)))
        # weights_only refuses pickled code: a file from the internet cannot run anything on load.
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise several unrelated types for a bad file
        raise CheckpointError(f"{file}: cannot read weights: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a state dict, got {type(state).__name__}")
    return state


def load_state_dict_strict(model: ViT, state: dict[str, torch.Tensor]) -> None:
    """Load weights, naming every missing, unexpected or mis-shaped tensor in one error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"checkpoint does not fit the ViT: missing={missing[:8]} unexpected={unexpected[:8]} "
            f"mismatched={mismatched[:8]}"
        )
    model.load_state_dict(state)


def load_checkpoint(path: str | Path, preset: str | None = None) -> LoadedModel:
    """Load ours, a Hugging Face `ViTForImageClassification` folder, or a timm `vit_*` file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if is_vitserve_checkpoint(path):
        return load_vitserve_checkpoint(path)
    if path.is_dir() and not is_timm_hub_folder(path):
        from vitserve.models.loaders.huggingface import load_hf_folder

        return load_hf_folder(path)
    from vitserve.models.loaders.timm import load_timm_file

    return load_timm_file(path, preset=preset)
