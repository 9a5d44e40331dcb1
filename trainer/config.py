"""Run arguments: one dataclass, its command line, its range checks."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .errors import UsageError


@dataclass
class TrainConfig:
    """Everything a run needs; defaults are the study's "default parameters" (see README)."""

    # data
    dataset: str = "uoft-cs/cifar10"
    dataset_config: Optional[str] = None
    train_split: str = "train"
    eval_split: str = "test"
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    samples_per_class: Optional[int] = 1000
    eval_samples_per_class: Optional[int] = None
    cache_dir: Optional[str] = None
    # augmentation
    flip: bool = True
    random_crop: int = 0
    # model
    model: str = "vit_base_patch16_224"
    img_size: Optional[int] = None
    model_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False
    pretrained_file: Optional[str] = None
    # optimisation
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: Optional[int] = None
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    clip_grad: Optional[float] = 1.0
    grad_accum: int = 1
    mixed_precision: Optional[str] = None
    compile: bool = False
    seed: int = 42
    # logging and output
    output_dir: str = "runs/latest"
    overwrite: bool = False
    eval_every: int = 0
    log_every: int = 50
    report_to: str = "none"
    progress: bool = True
    checkpoint_every: Optional[str] = None
    keep_checkpoints: int = 2
    resume_from: Optional[str] = None
    # distillation (train_kd.py)
    teacher: Optional[str] = None
    kd_type: str = "soft"
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    teacher_cache: bool = False

    def to_dict(self) -> dict:
        """Plain JSON-able copy of the arguments."""
        return dataclasses.asdict(self)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where the help already explains them or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, [], argparse.SUPPRESS) or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; the project's rule is one line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _parse_kwargs(items: Sequence[str]) -> dict:
    """Turn ['patch_size=4', 'depth=4', 'drop_rate=0.1'] into typed keyword arguments."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--model-kwargs expects key=value pairs, got '{item}' (example: patch_size=4 depth=4)")
        key, raw = item.split("=", 1)
        out[key.strip()] = _literal(raw.strip())
    return out


def _literal(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _optional_int(raw: str) -> Optional[int]:
    return None if raw.lower() in ("all", "none", "0") else int(raw)


def build_parser(kd: bool = False, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of train_cls.py (and of train_kd.py with kd=True)."""
    d = TrainConfig()
    p = _OneLineParser(
        prog=prog,
        description=("Distill a timm ViT student from a trained teacher" if kd else "Train or fine-tune a timm ViT")
        + " on an image-classification dataset, through Hugging Face Accelerate.",
        formatter_class=_DefaultsFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=d.dataset, help="hub id or local folder (load_dataset or save_to_disk)")
    g.add_argument("--dataset-config", default=d.dataset_config, help="dataset configuration name, if any")
    g.add_argument("--train-split", default=d.train_split, help="split to train on")
    g.add_argument("--eval-split", default=d.eval_split, help="split to evaluate on")
    g.add_argument("--image-column", default=None, help="default: the column whose feature is Image")
    g.add_argument("--label-column", default=None, help="default: the column whose feature is ClassLabel")
    g.add_argument("--samples-per-class", type=_optional_int, default=d.samples_per_class,
                   help="exactly N training images per class, chosen by --seed ('all' for the whole split)")
    g.add_argument("--eval-samples-per-class", type=_optional_int, default=d.eval_samples_per_class,
                   help="N eval images per class (default: the whole eval split)")
    g.add_argument("--cache-dir", default=d.cache_dir,
                   help="where decoded images are cached (default: $VIT_TRAINER_CACHE or ~/.cache/vit_trainer)")
    g.add_argument("--no-flip", dest="flip", action="store_false", help="disable random horizontal flips")
    g.add_argument("--random-crop", type=int, default=d.random_crop, metavar="PAD",
                   help="random crop after reflect-padding PAD pixels at the source resolution (0: off)")

    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, help="any timm model name, or name.tag")
    g.add_argument("--img-size", type=int, default=None, help="model input size (default: the model's own)")
    g.add_argument("--model-kwargs", nargs="*", default=[], metavar="K=V",
                   help="extra timm.create_model keyword arguments, e.g. patch_size=4 depth=4")
    g.add_argument("--pretrained", action="store_true", help="start from timm's pretrained weights (hub)")
    g.add_argument("--pretrained-file", default=None, help="start from a local .safetensors/.pth file")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    g.add_argument("--eval-batch-size", type=int, default=None, help="per process (default: 2x --batch-size)")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up, then cosine decay")
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="final lr as a fraction of --lr")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--clip-grad", type=float, default=d.clip_grad, help="max gradient norm (0: off)")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    g.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                   help="default: from the accelerate config / launch flags")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--seed", type=int, default=d.seed, help="fixes selection, init, order and augmentation")

    g = p.add_argument_group("logging and output")
    g.add_argument("--output-dir", default=d.output_dir)
    g.add_argument("--overwrite", action="store_true", help="replace another run's files in --output-dir")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="also evaluate every N steps (0: per epoch only)")
    g.add_argument("--log-every", type=int, default=d.log_every, help="write a train line every N steps (0: per epoch only)")
    g.add_argument("--report-to", choices=["none", "tensorboard", "wandb", "all"], default=d.report_to,
                   help="accelerate trackers")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--checkpoint-every", default=None, metavar="N|epoch",
                   help="save a resumable state every N steps or every epoch under OUTPUT_DIR/checkpoints/")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="keep the newest K states")
    g.add_argument("--resume-from", default=None, metavar="DIR|latest",
                   help="continue from a checkpoint folder, or the newest one in OUTPUT_DIR/checkpoints")

    if kd:
        g = p.add_argument_group("distillation")
        g.add_argument("--teacher", required=True,
                       help="a train_cls.py run folder, or its model.safetensors with config.json beside it")
        g.add_argument("--kd-type", choices=["soft", "hard"], default=d.kd_type)
        g.add_argument("--kd-alpha", type=float, default=d.kd_alpha, help="weight of the distillation term")
        g.add_argument("--kd-temperature", type=float, default=d.kd_temperature, help="softmax temperature (soft)")
        g.add_argument("--teacher-cache", action="store_true",
                       help="compute the teacher's logits for every image and view the run will visit, "
                            "once, before training")
    return p


def parse_args(argv: Optional[Sequence[str]] = None, kd: bool = False, prog: Optional[str] = None) -> TrainConfig:
    """Parse a command line into a checked TrainConfig."""
    ns = build_parser(kd=kd, prog=prog).parse_args(argv)
    values = vars(ns)
    values["model_kwargs"] = _parse_kwargs(values["model_kwargs"])
    if values.get("clip_grad") == 0:
        values["clip_grad"] = None
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def validate(cfg: TrainConfig) -> None:
    """Range checks that need no data or model: fail in a second, not after an epoch."""
    _check(cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}")
    _check(cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}")
    _check(cfg.eval_batch_size is None or cfg.eval_batch_size >= 1,
           f"--eval-batch-size must be at least 1, got {cfg.eval_batch_size}")
    _check(cfg.lr > 0 and cfg.lr < 10, f"--lr must be in (0, 10), got {cfg.lr}")
    _check(cfg.weight_decay >= 0, f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    _check(cfg.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {cfg.warmup_epochs}")
    _check(0 <= cfg.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    _check(0 <= cfg.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    _check(cfg.clip_grad is None or cfg.clip_grad > 0, f"--clip-grad must be > 0 (or 0 for off), got {cfg.clip_grad}")
    _check(cfg.grad_accum >= 1, f"--grad-accum must be at least 1, got {cfg.grad_accum}")
    _check(cfg.random_crop >= 0, f"--random-crop must be >= 0 pixels, got {cfg.random_crop}")
    _check(cfg.img_size is None or cfg.img_size >= 8, f"--img-size must be at least 8, got {cfg.img_size}")
    _check(cfg.eval_every >= 0, f"--eval-every must be >= 0, got {cfg.eval_every}")
    _check(cfg.log_every >= 0, f"--log-every must be >= 0, got {cfg.log_every}")
    for name in ("samples_per_class", "eval_samples_per_class"):
        value = getattr(cfg, name)
        _check(value is None or value >= 1, f"--{name.replace('_', '-')} must be at least 1 (or 'all'), got {value}")
    _check(not (cfg.pretrained and cfg.pretrained_file),
           "--pretrained and --pretrained-file exclude each other: pick the hub weights or the local file")
    _check(0 <= cfg.kd_alpha <= 1, f"--kd-alpha must be in [0, 1], got {cfg.kd_alpha}")
    _check(cfg.kd_temperature > 0, f"--kd-temperature must be > 0, got {cfg.kd_temperature}")
    _check(not (cfg.teacher_cache and cfg.random_crop),
           "--teacher-cache needs a finite set of views (flip / no flip): drop --random-crop or --teacher-cache")
    _check(cfg.checkpoint_every in (None, "epoch") or (str(cfg.checkpoint_every).isdigit()
                                                     and int(cfg.checkpoint_every) >= 1),
           f"--checkpoint-every must be a positive step count or 'epoch', got {cfg.checkpoint_every}")
    _check(cfg.keep_checkpoints >= 1, f"--keep-checkpoints must be at least 1, got {cfg.keep_checkpoints}")
    _check(not os.path.isfile(cfg.output_dir),
           f"--output-dir {cfg.output_dir} is a file: pass a folder path")
