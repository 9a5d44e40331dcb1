"""What a training run is built from (accelerator, data, model, input view), built and checked before anything is
written to the output folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import timm
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..config import TrainConfig
from ..data.augment import EvalCrop, View
from ..data.loading import DataBundle, default_cache_dir, load_data
from ..data.placement import place_splits
from ..distributed import main_process_first, make_accelerator, precision_warning
from ..errors import UsageError, is_main_rank, warn
from ..models import create_model, input_view, probe_model
from ..run_files import CONFIG_FILE, FINISHED_FILES, output_dir_in_use
from ..run_records import RunConfig, RunSummary
from .checkpoints import check_resumable, list_checkpoints, trajectory_args
from .optim import check_optimizer


@dataclass
class Setup:
    """What build_setup() makes: the ingredients a task is built on and the loop trains."""

    cfg: TrainConfig
    accelerator: Accelerator
    data: DataBundle
    model: torch.nn.Module
    view: View
    head_note: str  # one line on what happened to the classifier head
    data_note: str  # one line on which store serves the data, and why
    resume_checkpoint: Optional[str] = None  # the whole checkpoint folder to continue from (None: a fresh start)


def _eval_crop(cfg: TrainConfig) -> EvalCrop:
    """The model's input size and crop_pct before the model exists (photos are stored for them)."""
    pcfg = timm.models.get_pretrained_cfg(cfg.model)
    size = cfg.img_size or (int(pcfg.input_size[-1]) if pcfg is not None and pcfg.input_size else 224)
    return EvalCrop(size, float(pcfg.crop_pct) if pcfg is not None and pcfg.crop_pct else 0.875)


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The keyword arguments the model is built with: --model-kwargs, with --drop and --drop-path (timm's drop_rate,
    drop_path_rate) where they are set."""
    regularisers = {"drop_rate": cfg.drop, "drop_path_rate": cfg.drop_path}
    return {**{k: v for k, v in regularisers.items() if v}, **cfg.model_kwargs}


def already_complete(cfg: TrainConfig) -> Optional[dict[str, Any]]:
    """--resume-from auto on a run that finished with these arguments (a requeued job): its summary.json's content,
    with a line that says so; None where there is something to do."""
    if cfg.resume_from != "auto":
        return None
    summary = RunSummary.read(cfg.output_dir)
    if summary is None:
        return None
    try:
        trained = RunConfig.read(os.path.join(cfg.output_dir, CONFIG_FILE)).training
    except UsageError:
        return None
    defaults = trajectory_args(TrainConfig())
    saved, now = trajectory_args(trained), trajectory_args(cfg)
    if any(saved.get(k, defaults.get(k)) != v for k, v in now.items()):
        return None  # another run's files: check_output_dir refuses them
    if is_main_rank():
        print(f"{cfg.output_dir} is already complete ({summary.epochs} epochs, eval top1 {summary.eval_top1:.4f}): "
              "nothing to do; pass --overwrite to train it again", flush=True)
    return summary.to_json()


def check_output_dir(cfg: TrainConfig, resume_checkpoint: Optional[str]) -> None:
    """A finished run's files are replaced only with --overwrite, an unfinished run's checkpoints only continued
    (--resume-from) or replaced; the log of a run that ended before its first checkpoint is only a log."""
    if cfg.overwrite or resume_checkpoint:
        return
    out = cfg.output_dir
    finished = output_dir_in_use(out, FINISHED_FILES)
    if finished:
        raise UsageError(f"--output-dir {out} already holds a run ({finished}): pass --overwrite to replace it, "
                         "or another folder")
    if list_checkpoints(out):
        raise UsageError(f"--output-dir {out} holds the checkpoints of an unfinished run: pass --resume-from auto to "
                         "continue it, --overwrite to replace it, or another folder")
    if output_dir_in_use(out):
        warn(f"--output-dir {out} holds the log of a run that ended before its first checkpoint: starting afresh")


def build_setup(cfg: TrainConfig) -> Setup:
    """Everything that can fail on bad input, before anything is written to the output folder."""
    accelerator = make_accelerator(cfg.mixed_precision, cfg.report_to, cfg.output_dir)
    if (slow := precision_warning(str(accelerator.mixed_precision), accelerator.device)) is not None:
        warn(slow)
    resume_checkpoint = check_resumable(cfg)
    check_output_dir(cfg, resume_checkpoint)
    check_optimizer(cfg.opt)
    if not cfg.pretrained_file:  # what timm refuses is found now, not after decoding (a file is checked when read)
        probe_model(cfg.model, {**model_kwargs(cfg), **({"img_size": cfg.img_size} if cfg.img_size else {})},
                    pretrained=cfg.pretrained)
    set_seed(cfg.seed)
    data = main_process_first(accelerator, lambda: load_data(
        cfg.dataset, cfg.train_split, cfg.eval_split, image_column=cfg.image_column, label_column=cfg.label_column,
        samples_per_class=cfg.samples_per_class, eval_samples_per_class=cfg.eval_samples_per_class, seed=cfg.seed,
        crop=_eval_crop(cfg), cache_dir=cfg.cache_dir or default_cache_dir(), dataset_config=cfg.dataset_config,
        progress=cfg.progress and accelerator.is_main_process, skip_bad=cfg.skip_bad_images,
        val_split_percent=cfg.val_split_percent))
    set_seed(cfg.seed)  # the same initial weights whatever the data step drew
    model, head_note = main_process_first(accelerator, lambda: create_model(
        cfg.model, len(data.label_names), img_size=cfg.img_size, model_kwargs=model_kwargs(cfg),
        pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file))
    data_note = place_splits([data.train, data.eval], cfg.data_on, accelerator.device)
    return Setup(cfg, accelerator, data, model, input_view(model, cfg.img_size), head_note, data_note, resume_checkpoint)
