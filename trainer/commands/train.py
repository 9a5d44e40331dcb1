"""Entry points behind train_cls.py and train_kd.py: parse, train, end the processes."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..api import train
from ..config import parse_args
from ..distributed import end_processes
from ..errors import Preempted, exit_on_usage_error


def _train(argv: Optional[Sequence[str]], kd: bool, prog: str) -> dict[str, Any]:
    try:
        summary = train(parse_args(argv, kd=kd, prog=prog))
    except Preempted:  # every process stops at the same step: they can close the group together
        end_processes()
        raise
    end_processes()
    return summary


@exit_on_usage_error
def main_cls(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """accelerate launch train_cls.py ..."""
    return _train(argv, False, "train_cls.py")


@exit_on_usage_error
def main_kd(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """accelerate launch train_kd.py --teacher RUN ..."""
    return _train(argv, True, "train_kd.py")
