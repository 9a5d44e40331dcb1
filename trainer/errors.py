"""How a command ends early, in one line on stderr and never a traceback: bad input (exit code 2) or a stop on
SIGTERM / SIGINT after saving a resumable checkpoint (EXIT_PREEMPTED)."""
from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from typing import Any, Callable, TypeVar

T = TypeVar("T")


# sysexits.h EX_TEMPFAIL, "a temporary failure; the user is invited to retry". Launchers (accelerate launch,
# torchrun) report a failing worker as 1 whatever its code: summary.json in the run folder marks a finished run.
EXIT_PREEMPTED = 75


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


class Diverged(UsageError):
    """The loss became non-finite: these settings do not train (a sweep records the trial as failed and goes on)."""


class Preempted(Exception):
    """The run stopped on a signal after saving a resumable checkpoint."""

    def __init__(self, signame: str, step: int, checkpoint: str, auto_given: bool = False):
        how = ("run the same command again to continue" if auto_given else
               "run the same command with --resume-from auto to continue")
        super().__init__(f"stopped by {signame} after step {step}, resumable checkpoint {checkpoint}: {how}")
        self.signame, self.step, self.checkpoint = signame, step, checkpoint


class StoppedEarly(Exception):
    """A signal before training began: nothing was trained, nothing is left half-written."""

    def __init__(self, signame: str):
        super().__init__(f"stopped by {signame} before training began (nothing trained, nothing to resume): run the "
                         "same command again to start")
        self.signame = signame


def first_line(err: BaseException, limit: int = 200) -> str:
    """An error's first non-empty line, at most `limit` characters (its type's name where it has no message): what a
    one-line report quotes of a library's error."""
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_main_rank() -> bool:
    """True on the process that speaks for all (rank 0), before and after the process group exists."""
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def warn(line: str) -> None:
    """One line on stderr from the main process: something the user should know that does not stop the run."""
    if is_main_rank():
        print(f"warning: {line}", file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """Keep stderr for our own lines: datasets' split bars and the hub client's retry chatter are noise here. Through
    the environment, which both read when imported (so that a command's --help imports neither), and through their
    own switches where they are imported already."""
    for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                       ("DATASETS_VERBOSITY", "error"), ("HF_HUB_VERBOSITY", "error")):
        os.environ.setdefault(key, value)
    # torch.utils._pytree: torchao's import-time deprecation notice (transformers and ExecuTorch import torchao);
    # coremltools: its notices that Core ML's runtime is macOS-only and that this torch is newer than it tested.
    for name in ("datasets", "huggingface_hub", "timm", "torch.utils._pytree", "coremltools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Optuna's notices that heartbeats and trial retries are experimental (stable in use since Optuna 2.8): a filter
    # by message, since its warning class would import optuna, and for the process, since the heartbeat thread warns.
    warnings.filterwarnings("ignore", message=r".*experimental.* The interface can change in the future")
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.logging.set_verbosity_error()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
        sys.modules["datasets"].logging.set_verbosity_error()


def exit_on_usage_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI entry point: a UsageError prints one line and exits with 2, a run stopped by a signal with
    EXIT_PREEMPTED."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        quiet_libraries()
        try:
            return fn(*args, **kwargs)
        except UsageError as err:
            # Every process finds the same problem; one line is enough.
            if is_main_rank():
                print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        except (Preempted, StoppedEarly) as stop:
            if is_main_rank():
                print(stop, file=sys.stderr, flush=True)
            sys.exit(EXIT_PREEMPTED)

    return wrapper


def human_size(n: float) -> str:
    """Bytes as the one-line messages say them: '1.23 GB' or '45.6 MB'."""
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
