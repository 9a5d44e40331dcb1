"""Evaluate a saved run: `accelerate launch -m trainer.evaluate --checkpoint DIR`; last stdout line is JSON."""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import torch
from accelerate import PartialState

from .argparsing import OneLineParser, count_or_all
from .data import SplitData, default_cache_dir, load_eval_split
from .distributed import end_processes, make_accelerator
from .errors import UsageError, exit_on_usage_error
from .inference import evaluate, per_class_report, reference_predictions
from .models import load_run, run_view
from .placement import place_splits
from .run_folder import resolve_run


def build_parser() -> OneLineParser:
    """The command line of trainer.evaluate."""
    p = OneLineParser(prog="python -m trainer.evaluate", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="a train_cls.py/train_kd.py output folder or its model.safetensors")
    p.add_argument("--dataset", default=None, help="default: the dataset the run was trained on")
    p.add_argument("--dataset-config", default=None)
    p.add_argument("--eval-split", default=None, help="default: the run's eval split")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--eval-samples-per-class", type=count_or_all, default=RUNS_OWN, metavar="N|all",
                   help="default: the run's own choice on the run's own dataset and split, the whole split on another")
    p.add_argument("--seed", type=int, default=None, help="selection seed (default: the run's)")
    p.add_argument("--batch-size", type=int, default=256, help="per process")
    p.add_argument("--compare-with", default=None, metavar="RUN",
                   help="another run folder: also report the fraction of images where both predict the same class")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--data-on", choices=["auto", "device", "host", "disk"], default="auto",
                   help="where the decoded eval images live (see train_cls.py --help)")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None)
    return p


RUNS_OWN = -1  # --eval-samples-per-class not given


def run_eval_split(cfg: dict[str, Any], *, dataset: Optional[str] = None, dataset_config: Optional[str] = None,
                   eval_split: Optional[str] = None, image_column: Optional[str] = None,
                   label_column: Optional[str] = None, eval_samples_per_class: Optional[int] = RUNS_OWN,
                   seed: Optional[int] = None, cache_dir: Optional[str] = None) -> tuple[SplitData, str]:
    """The split to evaluate a run on, and its name: by default the run's own eval images; on another dataset or
    split the whole of it, unless eval_samples_per_class says otherwise (None: all)."""
    targs = cfg.get("training_args", {})
    run_dataset, run_split = targs.get("dataset", "uoft-cs/cifar10"), targs.get("eval_split", "test")
    dataset, split_name = dataset or run_dataset, eval_split or run_split
    if eval_samples_per_class == RUNS_OWN:
        own = (dataset, split_name) == (run_dataset, run_split)
        eval_samples_per_class = targs.get("eval_samples_per_class") if own else None
    split, names = load_eval_split(
        dataset, split_name, image_column=image_column or targs.get("image_column"),
        label_column=label_column or targs.get("label_column"), eval_samples_per_class=eval_samples_per_class,
        seed=seed if seed is not None else targs.get("seed", 0), frame=run_view(cfg).frame,
        cache_dir=cache_dir or default_cache_dir(), dataset_config=dataset_config or targs.get("dataset_config"))
    if len(names) != cfg["num_classes"]:
        raise UsageError(f"--checkpoint predicts {cfg['num_classes']} classes, the dataset has "
                         f"{len(names)}: evaluate on the dataset the run was trained on")
    return split, split_name


def evaluate_checkpoint(checkpoint: str, *, dataset: Optional[str] = None, dataset_config: Optional[str] = None,
                        eval_split: Optional[str] = None, image_column: Optional[str] = None,
                        label_column: Optional[str] = None, eval_samples_per_class: Optional[int] = RUNS_OWN,
                        seed: Optional[int] = None, batch_size: int = 256, compare_with: Optional[str] = None,
                        cache_dir: Optional[str] = None, mixed_precision: Optional[str] = None,
                        data_on: str = "auto") -> dict[str, Any]:
    """Loss and top-1 of a run folder on a split (default: the run's own eval data), and its agreement with
    another run; every sample counted once on any number of processes. Returns the JSON line's content."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    model, cfg = load_run(checkpoint, "--checkpoint")
    other = load_run(compare_with, "--compare-with") if compare_with else None
    acc = make_accelerator(mixed_precision)
    split, split_name = run_eval_split(cfg, dataset=dataset, dataset_config=dataset_config, eval_split=eval_split,
                                       image_column=image_column, label_column=label_column,
                                       eval_samples_per_class=eval_samples_per_class, seed=seed, cache_dir=cache_dir)
    place_splits([split], data_on, acc.device)
    references: dict[str, torch.Tensor] = {}
    if other is not None:
        other_model, other_cfg = other
        if other_cfg["num_classes"] != cfg["num_classes"]:
            raise UsageError("--compare-with has another class count than --checkpoint: compare runs of one dataset")
        references["agreement"], _, _ = reference_predictions(
            other_model.to(acc.device), resolve_run(str(compare_with))[0], split, run_view(other_cfg), acc, batch_size)
    res = evaluate(model.to(acc.device), split, run_view(cfg), acc, batch_size, references, keep_preds=True)
    assert res.preds is not None
    out: dict[str, Any] = {"top1": res.top1, "loss": res.loss, "num_samples": res.num_samples,
                           "checkpoint": checkpoint, "split": split_name, "processes": acc.num_processes}
    if acc.is_main_process:
        out["per_class"] = per_class_report(res.preds, split.labels, cfg.get("label_names") or [
            str(k) for k in range(cfg["num_classes"])])
    if other is not None:
        out.update(agreement=res.agreement["agreement"], compare_with=compare_with)
    return out


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Evaluate a run folder on a dataset split and print one JSON line."""
    args = vars(build_parser().parse_args(argv))
    out = evaluate_checkpoint(args.pop("checkpoint"), **args)
    if PartialState().is_main_process:
        print(json.dumps(out), flush=True)
    end_processes()
    return out


if __name__ == "__main__":
    main()
