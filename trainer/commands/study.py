"""The four-part study in one command: six runs, the throughput of both models, a report with plots.

    python -m trainer.study --preset hw2 --output-dir runs/hw2      # the real study (GPU)
    python -m trainer.study --preset demo --output-dir runs/demo    # the same, shrunk for 2 CPU cores

A run already complete in the output folder is not repeated, so an interrupted study continues.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from ..argparsing import OneLineParser
from ..errors import UsageError, exit_on_usage_error


def build_parser() -> OneLineParser:
    """The command line of trainer.study."""
    p = OneLineParser(prog="python -m trainer.study", description=__doc__)
    p.add_argument("--preset", choices=["hw2", "demo"], required=True,
                   help="hw2: the real study (a GPU); demo: the same shrunk for 2 CPU cores")
    p.add_argument("--output-dir", default=None, help="the study's folder (not needed with --estimate-only)")
    p.add_argument("--dataset", default=None, help="hw2: a local CIFAR-10 copy instead of the hub id")
    p.add_argument("--pretrained-base-file", default=None, help="local weights for the base model")
    p.add_argument("--pretrained-tiny-file", default=None, help="local weights for the tiny model")
    p.add_argument("--stand-in", action="store_true",
                   help="where no weights are given, pretrain labelled stand-ins here instead of using the hub")
    p.add_argument("--epochs", type=int, default=None, help="override the preset")
    p.add_argument("--samples-per-class", type=int, default=None, help="override the preset")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset")
    p.add_argument("--eval-samples-per-class", type=int, default=None, metavar="N",
                   help="override the preset's eval images (hw2: the whole test split): a smoke run on real data")
    p.add_argument("--standin-epochs", type=int, default=None, help="override the preset's stand-in pretraining")
    p.add_argument("--standin-per-class", type=int, default=None, help="override the preset's stand-in pretraining")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="throughput device")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache")
    p.add_argument("--seed", type=int, default=42, help="one seed for every run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--estimate-only", action="store_true", help="print the estimated time of the study here and stop")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run the study named by --preset."""
    values = vars(build_parser().parse_args(argv))
    if values["output_dir"] is None and not values["estimate_only"]:
        raise UsageError("--output-dir is needed (only --estimate-only runs without one): pass the study's folder")
    if values["output_dir"] and os.path.isfile(values["output_dir"]):
        raise UsageError(f"--output-dir {values['output_dir']} is a file: pass a folder")
    from ..distributed import end_processes
    from ..study.four_parts import StudyArgs, run_study

    study = run_study(StudyArgs(**values))
    end_processes()
    return study
