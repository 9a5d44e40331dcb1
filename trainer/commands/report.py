"""Rewrite the report of a study folder (report.md and its plots) from the runs' own files.

    python -m trainer.study.report runs/demo
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from ..errors import UsageError, exit_on_usage_error
from ..study.report_writer import write_report


@exit_on_usage_error
def main(argv: Optional[list[str]] = None) -> str:
    """Rewrite the report of a study folder."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise UsageError("usage: python -m trainer.study.report STUDY_DIR")
    if not os.path.isfile(os.path.join(args[0], "study.json")):
        raise UsageError(f"{args[0]} holds no study.json: pass a folder written by python -m trainer.study")
    path = write_report(args[0])
    print(path)
    return path
