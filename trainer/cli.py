"""Entry points behind train_cls.py and train_kd.py: parse, train, end the processes."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from .api import train
from .config import parse_args
from .distributed import end_processes
from .errors import exit_on_usage_error


@exit_on_usage_error
def main_cls(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """accelerate launch train_cls.py ..."""
    summary = train(parse_args(argv, prog="train_cls.py"))
    end_processes()
    return summary


@exit_on_usage_error
def main_kd(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """accelerate launch train_kd.py --teacher RUN ..."""
    summary = train(parse_args(argv, kd=True, prog="train_kd.py"))
    end_processes()
    return summary
