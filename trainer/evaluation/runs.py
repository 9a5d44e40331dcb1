"""Evaluating a finished run folder: the split it is evaluated on (its own eval images by default), its loss, top-1
and per-class figures, and its agreement with another run. What `python -m trainer.evaluate` prints."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..argparsing import RUNS_OWN
from ..data.loading import SplitData, default_cache_dir, held_out_percent, load_eval_split
from ..data.placement import place_splits
from ..data.sources import mapped_labels
from ..distributed import make_accelerator
from ..errors import UsageError
from ..models import load_trained
from ..run_records import RunConfig
from .inference import evaluate_split
from .per_class import per_class_report
from .predictions import reference_predictions



def eval_split_for(cfg: RunConfig, *, dataset: Optional[str] = None, dataset_config: Optional[str] = None,
                   eval_split: Optional[str] = None, image_column: Optional[str] = None,
                   label_column: Optional[str] = None, eval_samples_per_class: Optional[int] = RUNS_OWN,
                   seed: Optional[int] = None, cache_dir: Optional[str] = None,
                   skip_bad_images: bool = False) -> tuple[SplitData, str]:
    """The split to evaluate a run on, decoded, and its name: by default the run's own eval images; on another dataset
    or split the whole of it, unless eval_samples_per_class says otherwise (None: all)."""
    trained = cfg.training
    dataset, split_name = dataset or trained.dataset, eval_split or trained.eval_split
    percent = held_out_percent(trained.train_split, trained.eval_split, trained.val_split_percent)
    # A run whose eval images were a part of its train split held out is evaluated on that same part (never on an
    # image it trained on); any other split is another's, taken whole.
    held = percent is not None and dataset == trained.dataset and eval_split in (None, trained.train_split)
    if held:
        split_name = trained.train_split
    own = held or (percent is None and (dataset, split_name) == (trained.dataset, trained.eval_split))
    if eval_samples_per_class == RUNS_OWN:
        eval_samples_per_class = trained.eval_samples_per_class if own else None
    split, names = load_eval_split(
        dataset, split_name, image_column=image_column or trained.image_column,
        label_column=label_column or trained.label_column, eval_samples_per_class=eval_samples_per_class,
        seed=seed if seed is not None else trained.seed, crop=cfg.view.eval_crop,
        cache_dir=cache_dir or default_cache_dir(), dataset_config=dataset_config or trained.dataset_config,
        skip_bad=skip_bad_images or trained.skip_bad_images,
        held_out_percent=percent if held else None)
    if len(names) != cfg.num_classes:
        raise UsageError(f"--run predicts {cfg.num_classes} classes, the dataset has {len(names)}: evaluate on the "
                         "dataset the run was trained on")
    if cfg.label_names:  # the same classes in another order are matched by name; other classes are refused
        split.labels = torch.from_numpy(mapped_labels(split.labels.numpy(), names, cfg.label_names,
                                                      f"split '{split_name}' of {dataset}"))
    return split, split_name


def evaluate_run(run: str, *, dataset: Optional[str] = None, dataset_config: Optional[str] = None,
                 eval_split: Optional[str] = None, image_column: Optional[str] = None,
                 label_column: Optional[str] = None, eval_samples_per_class: Optional[int] = RUNS_OWN,
                 seed: Optional[int] = None, batch_size: int = 256, compare_with: Optional[str] = None,
                 cache_dir: Optional[str] = None, mixed_precision: Optional[str] = None,
                 data_on: str = "auto", skip_bad_images: bool = False) -> dict[str, Any]:
    """Loss and top-1 of a run folder on a split (default: the run's own eval data), and its agreement with
    another run; every sample counted once on any number of processes. Returns the JSON line's content."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if eval_samples_per_class is not None and eval_samples_per_class != RUNS_OWN and eval_samples_per_class < 1:
        raise UsageError(f"--eval-samples-per-class must be at least 1 (or 'all'), got {eval_samples_per_class}")
    trained = load_trained(run, "--run")
    other = load_trained(compare_with, "--compare-with") if compare_with else None
    acc = make_accelerator(mixed_precision)
    split, split_name = eval_split_for(trained.config, dataset=dataset, dataset_config=dataset_config,
                                       eval_split=eval_split, image_column=image_column, label_column=label_column,
                                       eval_samples_per_class=eval_samples_per_class, seed=seed, cache_dir=cache_dir,
                                       skip_bad_images=skip_bad_images)
    place_splits([split], data_on, acc.device)
    references: dict[str, torch.Tensor] = {}
    if other is not None:
        if other.config.num_classes != trained.config.num_classes:
            raise UsageError("--compare-with has another class count than --run: compare runs of one dataset")
        references["agreement"], _, _ = reference_predictions(
            other.model.to(acc.device), other.weights, split, other.config.view, acc, batch_size)
    res = evaluate_split(trained.model.to(acc.device), split, trained.config.view, acc, batch_size, references,
                         keep_preds=True)
    assert res.preds is not None
    out: dict[str, Any] = {"top1": res.top1, "loss": res.loss, "num_samples": res.num_samples,
                           "checkpoint": run, "split": split_name, "processes": acc.num_processes}
    if acc.is_main_process:
        out["per_class"] = per_class_report(res.preds, split.labels, trained.config.class_names)
    if other is not None:
        out.update(agreement=res.agreement["agreement"], compare_with=compare_with)
    return out
