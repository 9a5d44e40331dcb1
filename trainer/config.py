"""Run arguments: every option declared once (field, help, range); the command line is generated from them."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from .argparsing import count_or_all, parse_kwargs, steps_or_epoch
from .augment_policy import parse_policy
from .recipes import RECIPES
from .errors import UsageError


@dataclass(frozen=True)
class Opt:
    """How one TrainConfig field appears on the command line and which values it accepts."""

    help: str = ""
    group: str = ""
    parse: Optional[Callable[[str], Any]] = None  # argparse `type`; default: the type of the default
    after: Optional[Callable[[Any], Any]] = None  # applied to the parsed value (a whole list for nargs)
    check: Optional[Callable[[Any], bool]] = None  # range check; None values are never checked
    rule: str = ""  # what check wants, as in "--epochs must be {rule}, got 0"
    choices: Optional[Sequence[str]] = None
    metavar: Optional[str | tuple[str, ...]] = None
    nargs: Optional[str] = None
    kd_only: bool = False  # only train_kd.py has it
    required: bool = False
    aliases: tuple[str, ...] = ()  # other spellings on the command line (timm's train.py names)


def _option(group: str) -> Callable[..., Any]:
    def option(default: Any, help: str = "", **spec: Any) -> Any:
        meta = {"opt": Opt(help=help, group=group, **spec)}
        if isinstance(default, (dict, list)):
            return field(default_factory=lambda: type(default)(default), metadata=meta)
        return field(default=default, metadata=meta)

    return option


_data, _model, _optim, _recipe, _output, _kd = (_option(g) for g in ("data", "model", "optimisation", "recipe",
                                                                   "logging and output", "distillation"))
AT_LEAST_1 = dict(check=lambda v: v >= 1, rule="at least 1")
NON_NEGATIVE = dict(check=lambda v: v >= 0, rule=">= 0")


@dataclass
class TrainConfig:
    """Everything a run needs; defaults are the study's "default parameters" (see README)."""

    dataset: str = _data("uoft-cs/cifar10", "hub id or local folder (load_dataset or save_to_disk)")
    dataset_config: Optional[str] = _data(None, "dataset configuration name, if any", parse=str)
    train_split: str = _data("train", "split to train on")
    eval_split: str = _data("test", "split to evaluate on; the train split itself means: its --val-split-percent held out")
    val_split_percent: Optional[float] = _data(
        None, "evaluate on this percent of the train split, held out per class by --seed and never trained on (for a "
        "dataset with no other split; 10 where --eval-split is the train split)", parse=float, metavar="P",
        check=lambda v: 0 < v < 100, rule="in (0, 100)")
    image_column: Optional[str] = _data(None, "default: the column whose feature is Image", parse=str)
    label_column: Optional[str] = _data(None, "default: the column whose feature is ClassLabel", parse=str)
    samples_per_class: Optional[int] = _data(
        1000, "exactly N training images per class, chosen by --seed ('all' for the whole split)",
        parse=count_or_all, check=lambda v: v >= 1, rule="at least 1 (or 'all')")
    eval_samples_per_class: Optional[int] = _data(
        None, "N eval images per class (default: the whole eval split)", parse=count_or_all,
        check=lambda v: v >= 1, rule="at least 1 (or 'all')")
    skip_bad_images: bool = _data(False, "leave out images that do not decode (truncated, corrupt, empty, over PIL's "
                                         "size limit), with a line that counts them; by default the first one stops "
                                         "the run, naming its split and row")
    cache_dir: Optional[str] = _data(
        None, "where decoded images are cached (default: $VIT_TRAINER_CACHE or ~/.cache/vit_trainer)", parse=str)
    data_on: str = _data("auto", "where the decoded images live: device memory, host memory (pinned, prefetched) or the "
                         "memory-mapped decode cache; auto: device if the data fits in 40%% of its free memory, "
                         "else host if it fits in 50%% of the RAM, else disk", choices=("auto", "device", "host", "disk"))
    flip: bool = _data(True, "random horizontal flips (--no-flip: none)")
    random_crop: int = _data(0, "random crop after reflect-padding PAD pixels at the source resolution (0: off)",
                            metavar="PAD", check=lambda v: v >= 0, rule=">= 0 pixels")
    random_resized_crop: bool = _data(False, "timm's RandomResizedCrop (boxes drawn by the epoch plan, cut and resized "
                                             "on the device): the augmentation photo datasets are trained with")
    scale: list = _data([0.08, 1.0], "--random-resized-crop: range of the box's area, as a fraction of the image's",
                        nargs=2, parse=float, metavar=("MIN", "MAX"), check=lambda v: 0 < v[0] <= v[1] <= 1,
                        rule="two fractions 0 < MIN <= MAX <= 1")
    ratio: list = _data([3 / 4, 4 / 3], "--random-resized-crop: range of the box's aspect ratio (width / height)",
                        nargs=2, parse=float, metavar=("MIN", "MAX"), check=lambda v: 0 < v[0] <= v[1],
                        rule="two ratios 0 < MIN <= MAX")

    model: str = _model("vit_base_patch16_224", "any timm model name, or name.tag")
    img_size: Optional[int] = _model(None, "model input size (default: the model's own)", parse=int,
                                    check=lambda v: v >= 8, rule="at least 8")
    model_kwargs: dict = _model({}, "extra timm.create_model keyword arguments, e.g. patch_size=4 depth=4",
                               nargs="*", metavar="K=V", parse=str, after=parse_kwargs)
    pretrained: bool = _model(False, "start from timm's pretrained weights (hub)")
    pretrained_file: Optional[str] = _model(None, "start from a local .safetensors/.pth file", parse=str)
    drop: float = _model(0.0, "dropout rate (timm's drop_rate)", check=lambda v: 0 <= v < 1, rule="in [0, 1)")
    drop_path: float = _model(0.0, "stochastic depth: the rate at which a residual block is dropped (timm's "
                              "drop_path_rate)", check=lambda v: 0 <= v < 1, rule="in [0, 1)")

    epochs: int = _optim(5, **AT_LEAST_1)
    batch_size: int = _optim(64, "per process", **AT_LEAST_1)
    eval_batch_size: Optional[int] = _optim(None, "per process (default: 2x --batch-size)", parse=int, **AT_LEAST_1)
    opt: str = _optim("adamw", "optimizer, by its timm name (timm.optim.list_optimizers(): adamw, sgd, lamb, lion, ...)")
    lr: float = _optim(1e-4, "peak learning rate", check=lambda v: 0 < v < 10, rule="in (0, 10)")
    weight_decay: float = _optim(0.05, **NON_NEGATIVE)
    momentum: float = _optim(0.9, "momentum of SGD-like optimizers", check=lambda v: 0 <= v < 1, rule="in [0, 1)")
    opt_eps: Optional[float] = _optim(None, "optimizer epsilon (default: the optimizer's)", parse=float,
                                      check=lambda v: v > 0, rule="> 0")
    opt_betas: Optional[list] = _optim(None, "optimizer betas (default: the optimizer's)", nargs="+", parse=float,
                                       metavar="BETA", check=lambda v: all(0 <= b < 1 for b in v), rule="in [0, 1)")
    layer_decay: Optional[float] = _optim(
        None, "layer-wise lr decay: each block's lr is the next block's times this, the head's the full lr (BEiT/MAE "
        "fine-tunes: 0.65-0.75)", parse=float, check=lambda v: 0 < v <= 1, rule="in (0, 1]")
    warmup_epochs: float = _optim(0.5, "linear warm-up, then cosine decay", **NON_NEGATIVE)
    min_lr_ratio: float = _optim(0.0, "final lr as a fraction of --lr", check=lambda v: 0 <= v <= 1, rule="in [0, 1]")
    label_smoothing: float = _optim(0.0, "label smoothing of the targets", check=lambda v: 0 <= v < 1,
                                    rule="in [0, 1)", aliases=("--smoothing",))
    clip_grad: Optional[float] = _optim(1.0, "max gradient norm (0: off)", after=lambda v: v or None,
                                       check=lambda v: v > 0, rule="> 0 (or 0 for off)")
    grad_accum: int = _optim(1, "micro-batches per optimizer step", **AT_LEAST_1)
    mixed_precision: Optional[str] = _optim(None, "default: from the accelerate config / launch flags",
                                           choices=("no", "fp16", "bf16"))
    compile: bool = _optim(False, "torch.compile the model")
    seed: int = _optim(42, "fixes selection, init, order and augmentation", check=lambda v: 0 <= v < 2**32,
                       rule="in [0, 2^32)")

    recipe: Optional[str] = _recipe(None, "a published recipe as defaults of the flags below (deit: DeiT's from-scratch "
                                    "augmentation and regularisation; finetune: the ViT papers' SGD transfer recipe); "
                                    "flags given beside it win, and the run's start line says what it set",
                                    parse=str, choices=tuple(RECIPES))
    mixup: float = _recipe(0.0, "mixup alpha: images blended with the batch reversed, lambda ~ Beta(alpha, alpha) "
                           "(0: off; DeiT: 0.8)", **NON_NEGATIVE)
    cutmix: float = _recipe(0.0, "cutmix alpha: a box of the reversed batch pasted in (0: off; DeiT: 1.0)",
                            **NON_NEGATIVE)
    cutmix_minmax: Optional[list] = _recipe(None, "cutmix box sides as fractions of the image, drawn in [MIN, MAX) "
                                            "(sets cutmix alpha to 1, as timm does)", nargs=2, parse=float,
                                            metavar=("MIN", "MAX"), check=lambda v: 0 < v[0] < v[1] <= 1,
                                            rule="two increasing fractions 0 < MIN < MAX <= 1")
    mixup_prob: float = _recipe(1.0, "probability of mixing a batch (or an image, --mixup-mode elem)",
                                check=lambda v: 0 <= v <= 1, rule="in [0, 1]")
    mixup_switch_prob: float = _recipe(0.5, "with both --mixup and --cutmix: probability of cutmix",
                                       check=lambda v: 0 <= v <= 1, rule="in [0, 1]")
    mixup_mode: str = _recipe("batch", "one draw per batch, per pair of images (i, B-1-i), or per image",
                              choices=("batch", "pair", "elem"))
    mixup_off_epoch: int = _recipe(0, "stop mixing from this epoch on (0: never)", **NON_NEGATIVE)
    aa: Optional[str] = _recipe(None, "RandAugment as timm's policy strings say it (DeiT: rand-m9-mstd0.5-inc1) or "
                                "trivial (torchvision's TrivialAugmentWide): ops drawn per image, run on the device",
                                parse=str, metavar="POLICY")
    reprob: float = _recipe(0.0, "random erasing: probability per image (DeiT: 0.25)", check=lambda v: 0 <= v <= 1,
                            rule="in [0, 1]")
    remode: str = _recipe("pixel", "random erasing fill: per-pixel noise, a random colour per box, or zeros",
                          choices=("pixel", "rand", "const"))
    recount: int = _recipe(1, "random erasing: 1 to this many boxes per image", **AT_LEAST_1)
    model_ema: bool = _recipe(False, "keep an exponential moving average of the weights (timm's ModelEmaV3), evaluate "
                              "it beside the live model and save it as model_ema.safetensors")
    model_ema_decay: float = _recipe(0.9998, "--model-ema's decay (timm's default: a memory of about 5,000 steps; "
                                     "with --model-ema-warmup it is only the cap)", check=lambda v: 0 <= v < 1,
                                     rule="in [0, 1)")
    model_ema_warmup: bool = _recipe(False, "--model-ema: warm the decay up as timm does, 1 - (1 + step)^(-2/3), so "
                                     "that a run of a few hundred steps averages its own later weights")

    output_dir: str = _output("runs/latest")
    overwrite: bool = _output(False, "replace another run's files in --output-dir")
    eval_every: int = _output(0, "also evaluate every N steps (0: per epoch only)", **NON_NEGATIVE)
    log_every: int = _output(50, "write a train line every N steps (0: per epoch only)", **NON_NEGATIVE)
    report_to: str = _output("none", "accelerate trackers: one of tensorboard, wandb, mlflow, trackio, comet_ml, aim, "
                             "clearml, dvclive, swanlab, several separated by commas, all (every one installed) or none")
    progress: bool = _output(True, "a progress bar on the main process (--no-progress: none)")
    checkpoint_every: int | str | None = _output(
        None, "save a resumable state every N steps or every epoch under OUTPUT_DIR/checkpoints/",
        parse=steps_or_epoch, metavar="N|epoch", check=lambda v: v == "epoch" or (isinstance(v, int) and v >= 1),
        rule="a positive step count or 'epoch'")
    keep_checkpoints: int = _output(2, "keep the newest K states", **AT_LEAST_1)
    resume_from: Optional[str] = _output(
        None, "continue from a checkpoint folder, or the newest whole one in OUTPUT_DIR/checkpoints (latest); auto: "
        "the same, or a fresh start where there is none (what a requeued job passes)", parse=str,
        metavar="DIR|latest|auto")

    teacher: Optional[str] = _kd(None, "a train_cls.py run folder, or its model.safetensors with config.json beside it",
                                parse=str, kd_only=True, required=True)
    kd_type: str = _kd("soft", "soft: KL at --kd-temperature; hard: cross-entropy on the teacher's argmax; feature: MSE "
                       "between pooled pre-logits features (through a learned projection when the widths differ); "
                       "token: a deit_*_distilled_* student's distillation head learns the teacher",
                       choices=("soft", "hard", "feature", "token"), kd_only=True)
    kd_token_target: str = _kd("hard", "--kd-type token: the distillation head's target (DeiT's best: hard)",
                               choices=("soft", "hard"), kd_only=True)
    kd_alpha: float = _kd(0.5, "weight of the distillation term", check=lambda v: 0 <= v <= 1, rule="in [0, 1]",
                         kd_only=True)
    kd_temperature: float = _kd(4.0, "softmax temperature (soft targets)", check=lambda v: v > 0, rule="> 0",
                                kd_only=True)
    teacher_cache: bool = _kd(False, "compute the teacher's outputs for every image and view the run will visit, "
                                    "once, before training", kd_only=True)
    teacher_cache_dir: Optional[str] = _kd(
        None, "keep the teacher's outputs in DIR, keyed by its weights, the images, its input view and what is cached; "
        "later runs (another alpha, T, student or seed) read them instead of running the teacher (implies "
        "--teacher-cache)", parse=str, metavar="DIR", kd_only=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able copy of the arguments."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The arguments to_dict() wrote (a run folder's training_args); keys this version does not know are left out,
        and keys an older version did not write take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def flag(name: str) -> str:
    """The command-line spelling of a field."""
    return "--" + name.replace("_", "-")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def _require_writable(folder: str, what: str) -> None:
    """The folder exists and is writable, or can be made in its nearest existing parent."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    _require(os.path.isdir(probe), f"{what} {folder}: {probe} is a file: pass a folder path")
    _require(os.access(probe, os.W_OK | os.X_OK), f"{what} {folder} is not writable ({probe} is read-only): pass a "
             "folder you can write")


def validate(cfg: TrainConfig) -> None:
    """Each field's range, then the rules between fields: fail in a second, not after an epoch."""
    for f in dataclasses.fields(cfg):
        o: Opt = f.metadata["opt"]
        value = getattr(cfg, f.name)
        if value is None:
            continue
        if o.choices is not None:
            _require(value in o.choices, f"{flag(f.name)} must be one of {list(o.choices)}, got {value!r}")
        if isinstance(value, float):
            _require(math.isfinite(value), f"{flag(f.name)} must be a finite number, got {value}")
        if o.check is not None:
            _require(o.check(value), f"{flag(f.name)} must be {o.rule}, got {value}")
    if cfg.aa:
        parse_policy(cfg.aa)
    _require(not (cfg.pretrained and cfg.pretrained_file),
             "--pretrained and --pretrained-file exclude each other: pick the hub weights or the local file")
    if cfg.teacher_cache_dir:
        _require_writable(cfg.teacher_cache_dir, "--teacher-cache-dir")
    _require(not (cfg.layer_decay is not None and cfg.teacher and cfg.kd_type == "feature"),
             "--layer-decay with --kd-type feature: the projection trained beside the student has no layer to decay "
             "with; drop --layer-decay or pick --kd-type soft|hard|token")
    mixing = cfg.mixup > 0 or cfg.cutmix > 0 or cfg.cutmix_minmax is not None
    _require(not (mixing and cfg.teacher and (cfg.teacher_cache or cfg.teacher_cache_dir) and cfg.kd_alpha > 0),
             "--teacher-cache with --mixup/--cutmix: the teacher must see each mixed batch, new every epoch; drop "
             "--teacher-cache and --teacher-cache-dir (the teacher then runs on the mixed images, as DeiT's does)")
    _require(not (mixing and cfg.teacher and cfg.kd_type == "feature"),
             "--mixup/--cutmix with --kd-type feature: a blend of two images has no feature target of its own; pick "
             "--kd-type soft|hard|token")
    _require(not (cfg.random_crop and cfg.random_resized_crop),
             "--random-crop and --random-resized-crop exclude each other: pick one crop")
    _require(bool(cfg.output_dir), "--output-dir is empty: pass a folder path")
    _require(not os.path.isfile(cfg.output_dir), f"--output-dir {cfg.output_dir} is a file: pass a folder path")
    if cfg.teacher:
        teacher = cfg.teacher if os.path.isdir(cfg.teacher) else os.path.dirname(os.path.abspath(cfg.teacher))
        _require(os.path.realpath(teacher) != os.path.realpath(cfg.output_dir),
                 f"--teacher {cfg.teacher} is in --output-dir {cfg.output_dir}: the student would replace its teacher; "
                 "pass another --output-dir")
