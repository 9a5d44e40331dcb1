"""Draw the learning curves of one run or several side by side (loss and top-1 per epoch, train and eval, and a
distilled run's two terms), from their metrics.jsonl.

    python -m trainer.plot runs/part3                          # rewrites runs/part3/curves.png
    python -m trainer.plot runs/part3 runs/part4 --output cmp.png
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from ..argparsing import OneLineParser
from ..errors import UsageError, exit_on_usage_error


def build_parser() -> OneLineParser:
    """The command line of trainer.plot."""
    p = OneLineParser(prog="python -m trainer.plot", description=__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (finished, or still training)")
    p.add_argument("--output", default=None, help="the image (default: RUN/curves.png for one run, ./curves.png for "
                   "several)")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> str:
    """Draw the curves and print where they are."""
    args = build_parser().parse_args(argv)
    for run in args.runs:
        if not os.path.isfile(os.path.join(run, "metrics.jsonl")):
            raise UsageError(f"{run} holds no metrics.jsonl: pass a folder written by train_cls.py or train_kd.py")
    from ..evaluation.curves import plot_curves, run_curves

    output = args.output or (os.path.join(args.runs[0], "curves.png") if len(args.runs) == 1 else "curves.png")
    plot_curves([run_curves(run) for run in args.runs], output)
    print(f"wrote {output}: the curves of {', '.join(args.runs)}")
    return output
