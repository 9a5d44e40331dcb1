"""Entry points behind train_cls.py and train_kd.py: parse, train, end the processes. The library is imported after
the command line is parsed, so that --help answers at once."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..errors import Preempted, exit_on_usage_error
from ..train_args import parse_args


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None, kd: bool = False) -> dict[str, Any]:
    """Parse train_cls.py's (or, with kd, train_kd.py's) command line, train, end the processes."""
    cfg = parse_args(argv, kd=kd, prog="train_kd.py" if kd else "train_cls.py")
    from ..api import train
    from ..distributed import end_processes

    try:
        summary = train(cfg)
    except Preempted:  # every process stops at the same step: they can close the group together
        end_processes()
        raise
    end_processes()
    return summary


def main_cls(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """accelerate launch train_cls.py ..."""
    return main(argv, kd=False)


def main_kd(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """accelerate launch train_kd.py --teacher RUN ..."""
    return main(argv, kd=True)
