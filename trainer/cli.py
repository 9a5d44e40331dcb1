"""Entry points behind train_cls.py and train_kd.py: parse, then hand over to the engine."""
from __future__ import annotations

from typing import Optional, Sequence

from .config import parse_args
from .errors import exit_on_usage_error


@exit_on_usage_error
def main_cls(argv: Optional[Sequence[str]] = None) -> dict:
    """accelerate launch train_cls.py ..."""
    from .engine import train

    return train(parse_args(argv, prog="train_cls.py"))


@exit_on_usage_error
def main_kd(argv: Optional[Sequence[str]] = None) -> dict:
    """accelerate launch train_kd.py --teacher RUN ..."""
    from .distill import Distiller
    from .engine import train

    cfg = parse_args(argv, kd=True, prog="train_kd.py")
    return train(cfg, Distiller(cfg))
