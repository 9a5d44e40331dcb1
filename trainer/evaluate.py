"""Evaluate a saved run: `accelerate launch -m trainer.evaluate --checkpoint DIR`; last stdout line is JSON."""
from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from .config import _DefaultsFormatter, _OneLineParser, _optional_int
from .errors import UsageError, exit_on_usage_error


def build_parser() -> argparse.ArgumentParser:
    """The command line of trainer.evaluate."""
    p = _OneLineParser(prog="python -m trainer.evaluate", description=__doc__,
                       formatter_class=_DefaultsFormatter)
    p.add_argument("--checkpoint", required=True, help="a train_cls.py/train_kd.py output folder or its model.safetensors")
    p.add_argument("--dataset", default=None, help="default: the dataset the run was trained on")
    p.add_argument("--dataset-config", default=None)
    p.add_argument("--eval-split", default=None, help="default: the run's eval split")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--eval-samples-per-class", type=_optional_int, default=None,
                   help="default: the run's own choice (the whole split unless it chose N)")
    p.add_argument("--seed", type=int, default=None, help="selection seed (default: the run's)")
    p.add_argument("--batch-size", type=int, default=256, help="per process")
    p.add_argument("--compare-with", default=None, metavar="RUN",
                   help="another run folder: also report the fraction of images where both predict the same class")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None)
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Evaluate a run folder on a dataset split and print one JSON line."""
    from accelerate import Accelerator

    from .checkpoint import resolve_run
    from .data import default_cache_dir, load_data
    from .distill import reference_predictions
    from .engine import evaluate, has_accelerator
    from .models import load_run, run_view

    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    model, cfg = load_run(args.checkpoint, "--checkpoint")
    targs = cfg.get("training_args", {})
    other = load_run(args.compare_with, "--compare-with") if args.compare_with else None
    acc = Accelerator(cpu=not has_accelerator(), mixed_precision=args.mixed_precision)
    per_class = args.eval_samples_per_class if args.eval_samples_per_class is not None else \
        targs.get("eval_samples_per_class")
    data = load_data(args.dataset or targs.get("dataset", "uoft-cs/cifar10"), None,
                     args.eval_split or targs.get("eval_split", "test"),
                     image_column=args.image_column or targs.get("image_column"),
                     label_column=args.label_column or targs.get("label_column"),
                     eval_samples_per_class=per_class,
                     seed=args.seed if args.seed is not None else targs.get("seed", 0),
                     size=cfg.get("img_size"), cache_dir=args.cache_dir or default_cache_dir(),
                     dataset_config=args.dataset_config or targs.get("dataset_config"))
    if len(data.label_names) != cfg["num_classes"]:
        raise UsageError(f"--checkpoint predicts {cfg['num_classes']} classes, the dataset has "
                         f"{len(data.label_names)}: evaluate on the dataset the run was trained on")
    split = data.eval
    split.images, split.labels = split.images.to(acc.device), split.labels.to(acc.device)
    reference = None
    if other is not None:
        other_model, other_cfg = other
        if other_cfg["num_classes"] != cfg["num_classes"]:
            raise UsageError("--compare-with has another class count than --checkpoint: compare runs of one dataset")
        reference, _, _ = reference_predictions(other_model.to(acc.device), resolve_run(args.compare_with)[0], split,
                                                run_view(other_cfg), acc, args.batch_size)
    res = evaluate(model.to(acc.device), split, run_view(cfg), acc, args.batch_size,
                   reference=reference)
    out = {"top1": res["top1"], "loss": res["loss"], "num_samples": res["num_samples"],
           "checkpoint": args.checkpoint, "split": args.eval_split or targs.get("eval_split", "test"),
           "processes": acc.num_processes}
    if reference is not None:
        out["agreement"] = res["agreement"]
        out["compare_with"] = args.compare_with
    if acc.is_main_process:
        print(json.dumps(out), flush=True)
    acc.wait_for_everyone()
    acc.end_training()
    return out


if __name__ == "__main__":
    main()
