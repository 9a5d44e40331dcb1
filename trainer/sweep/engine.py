"""A sweep on Optuna: the study in its storage (SQLite in the sweep's folder by default, any RDB URL or a journal file
on a shared filesystem), each trial a call of the library's train() in DIR/trial-N reported to Optuna after every
epoch for pruning, a trial whose process died resumed through --resume-from auto, and the trial count shared by
every process that joins."""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..config import TrainConfig
from ..errors import Diverged, UsageError
from .space import Dimension, flags

PRUNERS = ("median", "hyperband", "none")
DB_FILE = "sweep.db"
TEACHER_CACHE = "teacher-cache"
HEARTBEAT_S, GRACE_S = 20, 60  # a trial whose process stopped beating for a minute is retried elsewhere


@dataclass
class SweepArgs:
    """What `python -m trainer.sweep` was asked."""

    space: list[Dimension]
    fixed: list[str]  # the train_cls.py / train_kd.py arguments after --
    kd: bool
    trials: int
    output_dir: str
    storage: Optional[str] = None
    study_name: str = "sweep"
    direction: str = "maximize"
    metric: str = "eval_top1"
    pruner: str = "median"
    seed: Optional[int] = None
    parse: Optional[Callable[[list[str]], TrainConfig]] = field(default=None, repr=False)


def storage_for(url: Optional[str], output_dir: str) -> Any:
    """The Optuna storage: SQLite in output_dir by default, an RDB URL (heartbeats on, a trial of a dead process
    retried with its parameters), or journal:PATH (Optuna's journal file, for a shared filesystem without a
    database); UsageError where it cannot be reached."""
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    url = url or f"sqlite:///{os.path.abspath(os.path.join(output_dir, DB_FILE))}"
    try:
        if url.startswith("journal:"):
            path = url[len("journal:"):]
            if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise OSError(f"no folder {os.path.dirname(os.path.abspath(path))}")
            return JournalStorage(JournalFileBackend(path))
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                              max_retry=3, inherit_intermediate_values=True))
    except Exception as err:
        line = next((t.strip() for t in str(err).splitlines() if t.strip()), type(err).__name__)
        raise UsageError(f"--storage {url} cannot be reached ({type(err).__name__}: {line[:200]}): start the "
                         "database, fix the URL, or leave --storage out for SQLite in the sweep's folder") from None


def make_pruner(name: str, epochs: int) -> Any:
    """median: Optuna's MedianPruner; hyperband: HyperbandPruner over 1..epochs; none."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(args: SweepArgs, storage: Any, epochs: int) -> Any:
    """Create the study, or join it: the same space and direction, else UsageError."""
    import optuna

    space = [d.describe() for d in args.space]
    direction = optuna.study.StudyDirection[args.direction.upper()]
    study = optuna.create_study(storage=storage, study_name=args.study_name, direction=direction,
                                pruner=make_pruner(args.pruner, epochs), load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=args.seed))
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", space)
        study.set_user_attr("metric", args.metric)
        study.set_user_attr("fixed", args.fixed)
    elif stored != space or study.direction.name.lower() != args.direction or study.user_attrs.get(
            "metric") != args.metric:
        raise UsageError(f"--study-name {args.study_name} exists in this storage with another space, metric or "
                         f"direction ({study.direction.name.lower()} {study.user_attrs.get('metric')}): pass another "
                         "--study-name, or the same --space and --direction")
    return study


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retry_orphans(study: Any) -> list[int]:
    """Trials left RUNNING by a process of this machine that is gone (SIGKILL, a reboot): failed and queued again with
    their parameters at once, as Optuna's heartbeat would after its grace period; their run folders continue."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    host, found = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and isinstance(pid, int) and pid != os.getpid() and not _alive(pid):
            # Optuna has no public call that fails another process's trial: its own stale-trial path does the same.
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)(study, t)
                found.append(t.number)
    return found


def counted(study: Any) -> int:
    """Trials that use up the sweep's count: finished ones (a failed one that was queued again is not), and the ones
    running or waiting."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    # What RetryHeartbeatStaleTrialCallback.retried_trial_number reads (that call warns it is experimental).
    retried = {n for t in trials if (n := t.system_attrs.get("failed_trial")) is not None}
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def run_dir(args: SweepArgs, trial: Any) -> str:
    """DIR/trial-N; a retried trial continues in the folder of the trial it retries (Optuna's retry copies the
    original's user attributes, run_dir among them)."""
    return trial.user_attrs.get("run_dir") or os.path.join(args.output_dir, f"trial-{trial.number}")


def trial_argv(args: SweepArgs, values: dict[str, Any], folder: str) -> list[str]:
    """The training command line of one trial: the fixed arguments, the trial's values, its folder, resume on."""
    argv = [*args.fixed, *flags(args.space, values), "--output-dir", folder, "--resume-from", "auto"]
    if args.kd and not any(a == "--teacher-cache-dir" or a.startswith("--teacher-cache-dir=") for a in args.fixed):
        argv += ["--teacher-cache-dir", os.path.join(args.output_dir, TEACHER_CACHE)]
    return argv


def objective(args: SweepArgs, train: Callable[..., dict[str, Any]], say: Callable[[str], None]) -> Callable:
    """Optuna's objective: one trial trained, its eval figure reported after every epoch (pruned when the pruner says),
    its final figure returned; a diverged trial fails and the sweep goes on, bad arguments stop it."""
    import optuna

    parse = args.parse
    assert parse is not None

    def run(trial: Any) -> float:
        values = {d.name: d.suggest(trial) for d in args.space}
        folder = run_dir(args, trial)
        trial.set_user_attr("run_dir", folder)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        cfg = parse(trial_argv(args, values, folder))
        say(f"trial {trial.number}: {' '.join(flags(args.space, values))} in {folder}")
        start = time.perf_counter()

        def on_epoch(epoch: int, figures: dict[str, float]) -> None:
            trial.report(figures[args.metric], epoch)
            if trial.should_prune():
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


def run_sweep(args: SweepArgs, train: Callable[..., dict[str, Any]], epochs: int,
              say: Callable[[str], None]) -> Any:
    """Open or join the study, retry this machine's orphaned trials, run trials until the study has args.trials;
    return the study."""
    import optuna

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

    if counted(study) < args.trials or any(t.state == optuna.trial.TrialState.WAITING for t in study.get_trials()):
        study.optimize(objective(args, train, say), n_trials=args.trials, callbacks=[enough], catch=(Diverged,),
                       gc_after_trial=True)
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
        if any(a == flag or a.startswith(flag + "=") for a in args.fixed):
            raise UsageError(f"{flag} is the sweep's to set (DIR/trial-N, auto): drop it from the arguments after --")
    for d in args.space:
        if any(a == d.flag or a.startswith(d.flag + "=") or a == "--no-" + d.flag[2:] for a in args.fixed):
            raise UsageError(f"{d.flag} is both swept (--space) and fixed (after --): drop one")
    base = {d.name: (d.choices[0] if d.kind == "choices" else d.low) for d in args.space}
    probe = os.path.join(args.output_dir, "trial-0")
    for corner in corner_values:
        args.parse(trial_argv(args, {**base, **corner}, probe))
