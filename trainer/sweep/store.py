"""A sweep's study where Optuna keeps it: SweepArgs (what the command was asked), the storage (SQLite in the sweep's
folder by default, an RDB URL with heartbeats, or a journal file), the study created or joined, this machine's
orphaned trials queued again, and the trials that count towards --trials."""
from __future__ import annotations

import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..config import TrainConfig
from ..errors import UsageError, first_line
from .space import Dimension

PRUNERS = ("median", "hyperband", "none")
DB_FILE = "sweep.db"
# The pip name of each SQLAlchemy driver a database URL may need (postgresql:// is psycopg 3 in SQLAlchemy 2.1).
DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "pymysql", "MySQLdb": "mysqlclient"}
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
        for attempt in range(10):
            try:
                return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                      max_retry=3, inherit_intermediate_values=True))
            except Exception as err:  # two processes creating the schema at once: the later one finds it made
                if "already exists" not in str(err) or attempt == 9:
                    raise
                time.sleep(0.2 + random.random())
        raise AssertionError("unreachable")
    except ImportError as err:  # Optuna's words for SQLAlchemy's missing driver, the driver's name in its cause
        module = getattr(err.__cause__, "name", None) or "its driver"
        raise UsageError(f"--storage {url}: the database driver {module} is not installed: pip install "
                         f"{DRIVERS.get(module, module)}") from None
    except Exception as err:
        raise UsageError(f"--storage {url} cannot be reached ({type(err).__name__}: {first_line(err)}): start the "
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
    """Trials that use up the sweep's count: finished ones (a failed one that was queued again is not) and running
    ones; a waiting (queued) trial is run before the count is reached."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    # What RetryHeartbeatStaleTrialCallback.retried_trial_number reads (that call warns it is experimental).
    retried = {n for t in trials if (n := t.system_attrs.get("failed_trial")) is not None}
    return sum(1 for t in trials if t.state != TrialState.WAITING
               and not (t.state == TrialState.FAIL and t.number in retried))
