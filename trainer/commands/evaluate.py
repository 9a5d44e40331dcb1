"""Evaluate a finished run: `accelerate launch -m trainer.evaluate --run RUN`; the last stdout line is JSON."""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from ..argparsing import RUNS_OWN, OneLineParser, add_run_argument, count_or_all
from ..errors import exit_on_usage_error


def build_parser() -> OneLineParser:
    """The command line of trainer.evaluate."""
    p = OneLineParser(prog="python -m trainer.evaluate", description=__doc__)
    add_run_argument(p)
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
    p.add_argument("--skip-bad-images", action="store_true", help="leave out images that do not decode (default: the "
                   "run's own choice; else the first one stops, naming its row)")
    p.add_argument("--data-on", choices=["auto", "device", "host", "disk"], default="auto",
                   help="where the decoded eval images live (see train_cls.py --help)")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None)
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Evaluate a run folder on a dataset split and print one JSON line."""
    args = vars(build_parser().parse_args(argv))
    from accelerate import PartialState

    from ..distributed import end_processes
    from ..evaluation.runs import evaluate_run

    out = evaluate_run(args.pop("run"), **args)
    if PartialState().is_main_process:
        agree = f", agreement with {out['compare_with']} {out['agreement']:.4f}" if "agreement" in out else ""
        print(f"{out['checkpoint']} on split '{out['split']}' ({out['num_samples']} images): top1 {out['top1']:.4f}, "
              f"loss {out['loss']:.4f}{agree}", flush=True)
        print(json.dumps(out), flush=True)
    end_processes()
    return out
