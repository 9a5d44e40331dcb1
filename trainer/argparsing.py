"""Command-line plumbing shared by every entry point: one-line errors, shown defaults, typed values."""
from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn, Optional, Sequence

from .errors import UsageError


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where the help already explains them or there is none to show; keep the description's
    lines (its example commands) as written."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if "default" in text or action.default in (None, [], argparse.SUPPRESS) or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; the project's rule is one line and exit code 2."""

    def __init__(self, prog: Optional[str] = None, description: Optional[str] = None):
        super().__init__(prog=prog, description=description, formatter_class=DefaultsFormatter)

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def gives(argv: Sequence[str], flag: str) -> bool:
    """Whether a command line gives this option (as `--flag VALUE` or `--flag=VALUE`)."""
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def literal(raw: str) -> Any:
    """'true' -> True, 'none' -> None, '4' -> 4, '0.1' -> 0.1, anything else stays a string."""
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """Turn ['patch_size=4', 'depth=4', 'drop_rate=0.1'] into typed keyword arguments."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--model-kwargs expects key=value pairs, got '{item}' (example: patch_size=4 depth=4)")
        key, raw = item.split("=", 1)
        out[key.strip()] = literal(raw.strip())
    return out


RUNS_OWN = -1  # --eval-samples-per-class not given: the run's own choice on its own split, the whole of another


def count_or_all(raw: str) -> Optional[int]:
    """A count, or None for 'all'."""
    return None if raw.lower() in ("all", "none") else int(raw)


def steps_or_epoch(raw: str) -> int | str:
    """A step count, or 'epoch'."""
    if raw == "epoch":
        return raw
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive step count or 'epoch', got '{raw}'") from None


def add_run_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--run RUN: a finished run folder (or its model.safetensors); --checkpoint is its older name."""
    parser.add_argument("--run", "--checkpoint", dest="run", required=required, metavar="RUN",
                        help="a finished train_cls.py/train_kd.py output folder, or its model.safetensors "
                             "(--checkpoint: the same, its older name)")
