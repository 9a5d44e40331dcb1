"""User-facing errors: one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def quiet_libraries() -> None:
    """Keep stderr for our own lines: datasets' split bars and the hub client's retry chatter are noise here."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("datasets", "huggingface_hub", "timm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import huggingface_hub.utils.logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass


def exit_on_usage_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI entry point so that a UsageError prints one line and exits with code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        quiet_libraries()
        try:
            return fn(*args, **kwargs)
        except UsageError as err:
            # Every process finds the same problem; one line is enough.
            if _is_main_rank():
                print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
