"""The four-part study in one command: six runs, the throughput of both models, a report with plots.

    python -m trainer.study --preset hw2 --output-dir runs/hw2      # the real study (GPU)
    python -m trainer.study --preset demo --output-dir runs/demo    # the same, shrunk for 2 CPU cores

A run already complete in the output folder is not repeated, so an interrupted study continues.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from ..argparsing import OneLineParser
from ..distributed import end_processes
from ..errors import UsageError, exit_on_usage_error
from ..study.four_parts import StudyArgs, run_study


def build_parser() -> OneLineParser:
    """The command line of trainer.study."""
    p = OneLineParser(prog="python -m trainer.study", description=__doc__)
    p.add_argument("--preset", choices=["hw2", "demo"], required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--dataset", default=None, help="hw2: a local CIFAR-10 copy instead of the hub id")
    p.add_argument("--pretrained-base-file", default=None, help="local weights for the base model")
    p.add_argument("--pretrained-tiny-file", default=None, help="local weights for the tiny model")
    p.add_argument("--stand-in", action="store_true",
                   help="where no weights are given, pretrain labelled stand-ins here instead of using the hub")
    p.add_argument("--epochs", type=int, default=None, help="override the preset")
    p.add_argument("--samples-per-class", type=int, default=None, help="override the preset")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset")
    p.add_argument("--standin-epochs", type=int, default=None, help="override the preset's stand-in pretraining")
    p.add_argument("--standin-per-class", type=int, default=None, help="override the preset's stand-in pretraining")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="throughput device")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--estimate-only", action="store_true", help="print the estimated time of the study here and stop")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run the study named by --preset."""
    args = StudyArgs(**vars(build_parser().parse_args(argv)))
    if os.path.isfile(args.output_dir):
        raise UsageError(f"--output-dir {args.output_dir} is a file: pass a folder")
    study = run_study(args)
    end_processes()
    return study
