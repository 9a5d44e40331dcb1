"""A sweep on Optuna: each trial a call of the library's train() in DIR/trial-N reported to Optuna after every epoch
for pruning (a trial whose process died resumes there through --resume-from auto), a trial's other processes under
accelerate launch following the main one, and the checks made before anything is written."""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Sequence

from ..argparsing import gives
from ..distributed import make_accelerator
from ..errors import Diverged, UsageError
from .space import flags
from .store import PRUNERS, SweepArgs, counted, open_study, retry_orphans, storage_for

TEACHER_CACHE = "teacher-cache"


def run_dir(args: SweepArgs, trial: Any) -> str:
    """DIR/trial-N; a retried trial continues in the folder of the trial it retries (Optuna's retry copies the
    original's user attributes, run_dir among them) where this machine can reach it, else starts over in its own."""
    retried = trial.user_attrs.get("run_dir")
    if retried and os.path.isdir(retried):  # a dead machine's folder on its own disk is not here
        return retried
    return os.path.join(args.output_dir, f"trial-{trial.number}")


def trial_argv(args: SweepArgs, values: dict[str, Any], folder: str) -> list[str]:
    """The training command line of one trial: the fixed arguments, the trial's values, its folder, resume on; a
    distillation trial's teacher cache DIR/teacher-cache, before the fixed arguments so that the user's own wins."""
    shared = ["--teacher-cache-dir", os.path.join(args.output_dir, TEACHER_CACHE)] if args.kd else []
    return [*shared, *args.fixed, *flags(args.space, values), "--output-dir", folder, "--resume-from", "auto"]


def _processes() -> int:
    """The processes of one trial: accelerate launch / torchrun's WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def share(value: Any) -> Any:
    """The main process's value on every process of the trial (the others pass anything)."""
    if _processes() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


class Followers:
    """The main process's side of a trial's other processes: the next command line, or the end, said once."""

    def __init__(self) -> None:
        self.ended = False

    def start(self, argv: list[str]) -> None:
        """Every process trains this command line."""
        share(argv)

    def end(self) -> None:
        """The others stop (once: they no longer listen after)."""
        if not self.ended:
            self.ended = True
            share(None)


def objective(args: SweepArgs, train: Callable[..., dict[str, Any]], say: Callable[[str], None],
              followers: Followers) -> Callable:
    """Optuna's objective on the main process: one trial trained (its command line shared with the trial's other
    processes), its eval figure reported after every epoch (pruned when the pruner says, every process together), its
    final figure returned; a diverged trial fails and the sweep goes on, bad arguments stop it."""
    import optuna

    parse = args.parse
    assert parse is not None

    def run(trial: Any) -> float:
        values = {d.name: d.suggest(trial) for d in args.space}
        folder = run_dir(args, trial)
        trial.set_user_attr("run_dir", folder)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        argv = trial_argv(args, values, folder)
        try:
            cfg = parse(argv)
        except UsageError:
            followers.end()  # the other processes stop with this one
            raise
        followers.start(argv)
        say(f"trial {trial.number}: {' '.join(flags(args.space, values))} in {folder}")
        start = time.perf_counter()

        def on_epoch(epoch: int, figures: dict[str, float]) -> None:
            trial.report(figures[args.metric], epoch)
            if share(trial.should_prune()):
                say(f"trial {trial.number}: pruned after epoch {epoch} ({args.metric} {figures[args.metric]:.4f})")
                raise optuna.TrialPruned()

        try:
            summary = train(cfg, on_epoch=on_epoch)
        except Diverged as err:
            trial.set_user_attr("error", str(err))
            say(f"trial {trial.number}: failed: {err}")
            raise
        finally:
            trial.set_user_attr("seconds", round(trial.user_attrs.get("seconds", 0) + time.perf_counter() - start, 2))
        if summary.get("teacher_cache_forwards") is not None:
            trial.set_user_attr("teacher_forwards", int(summary["teacher_cache_forwards"]))
        return float(summary["final"][args.metric])

    return run


def follow(args: SweepArgs, train: Callable[..., dict[str, Any]]) -> None:
    """A trial's other processes (accelerate launch): train what the main process shares, prune when it says, until
    it shares None."""
    import optuna

    assert args.parse is not None

    def on_epoch(epoch: int, figures: dict[str, float]) -> None:
        if share(None):
            raise optuna.TrialPruned()

    while (argv := share(None)) is not None:
        try:
            train(args.parse(argv), on_epoch=on_epoch)
        except (optuna.TrialPruned, Diverged):
            continue


def run_sweep(args: SweepArgs, train: Callable[..., dict[str, Any]], epochs: int,
              say: Callable[[str], None]) -> Any:
    """Open or join the study, retry this machine's orphaned trials, run trials until the study has args.trials;
    return the study (None on a trial's other processes, which only follow the main one)."""
    import optuna

    if _processes() > 1:
        if not make_accelerator().is_main_process:  # the group forms as a run's would
            follow(args, train)
            return None
    followers = Followers()
    try:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial's end and failure are said by our lines
        if args.storage is None:  # the default database lives in the folder
            os.makedirs(args.output_dir, exist_ok=True)
        storage = storage_for(args.storage, args.output_dir)
        os.makedirs(args.output_dir, exist_ok=True)
        study = open_study(args, storage, epochs)
        for number in retry_orphans(study):
            say(f"trial {number} was left running by a process that is gone: queued again, to resume from its folder")

        def enough(study: Any, trial: Any) -> None:
            if counted(study) >= args.trials:
                study.stop()

        if counted(study) < args.trials:
            study.optimize(objective(args, train, say, followers), n_trials=args.trials, callbacks=[enough],
                           catch=(Diverged,), gc_after_trial=True)
    finally:
        followers.end()
    return study


def check_args(args: SweepArgs, corner_values: Sequence[dict[str, Any]]) -> None:
    """Everything that can be refused before a file is written: --trials, the fixed arguments, and each end of each
    range through the trainer's own checks."""
    assert args.parse is not None
    if args.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    if args.pruner not in PRUNERS:
        raise UsageError(f"--pruner {args.pruner} is not one of {', '.join(PRUNERS)}")
    for flag in ("--output-dir", "--resume-from"):
        if gives(args.fixed, flag):
            raise UsageError(f"{flag} is the sweep's to set (DIR/trial-N, auto): drop it from the arguments after --")
    for d in args.space:
        if gives(args.fixed, d.flag) or gives(args.fixed, "--no-" + d.flag[2:]):
            raise UsageError(f"{d.flag} is both swept (--space) and fixed (after --): drop one")
    base = {d.name: (d.choices[0] if d.kind == "choices" else d.low) for d in args.space}
    probe = os.path.join(args.output_dir, "trial-0")
    for corner in corner_values:
        args.parse(trial_argv(args, {**base, **corner}, probe))
