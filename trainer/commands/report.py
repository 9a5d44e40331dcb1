"""Rewrite the report of a study folder (report.md and its plots) from the runs' own files.

    python -m trainer.study.report runs/demo
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from ..argparsing import OneLineParser
from ..errors import UsageError, exit_on_usage_error


def build_parser() -> OneLineParser:
    """The command line of trainer.study.report."""
    p = OneLineParser(prog="python -m trainer.study.report", description=__doc__)
    p.add_argument("study_dir", metavar="STUDY_DIR", help="a folder written by python -m trainer.study")
    return p


@exit_on_usage_error
def main(argv: Optional[list[str]] = None) -> str:
    """Rewrite the report of a study folder."""
    folder = build_parser().parse_args(sys.argv[1:] if argv is None else argv).study_dir
    if not os.path.isfile(os.path.join(folder, "study.json")):
        raise UsageError(f"{folder} holds no study.json: pass a folder written by python -m trainer.study")
    from ..study.report_writer import write_report

    path = write_report(folder)
    print(path)
    return path
