"""Sweeps on the CIFAR-10 copy with the small ViT (32 px, patch 4, depth 4): what pruning saves, what a second
process adds, and what a shared teacher cache saves a distillation sweep (--what prune,join,kd; rdb with a database).

    python benchmarks/sweep.py --dataset ../shared/data/cifar10 [--what prune,join,kd] [--storage URL --what rdb] [--json]

- prune: a --trials lr x weight-decay sweep with the median pruner, then the same trials (their parameters
  enqueued) with no pruner: wall time ratio, trials pruned, whether the best trial is the same.
- join: a --join-trials sweep by one process, then by two processes on one SQLite study (each with half the
  threads): wall times, trials run, and that no trial ran twice (distinct numbers, run folders, parameters).
- kd: a 6-trial sweep over kd_alpha and kd_temperature with one shared teacher cache, --kd-epochs each (the
  mission's 5): the teacher forwards the sweep paid against what online teachers pay (every training image, every
  epoch, every trial): teacher_share (<= 0.1).
- rdb (needs --storage URL, PostgreSQL or MySQL): two processes on one database study, each with its own folder (two
  machines without a shared disk); one is SIGKILLed during its first trial: the other finishes the --join-trials, the
  dead trial retried with its parameters once its heartbeat is stale.
The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=4", "depth=4"]
SPACE = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "weight_decay": {"low": 0.0, "high": 0.2}}


def _fixed(args: argparse.Namespace, *extra: str) -> list[str]:
    return [*MODEL, "--dataset", args.dataset, "--samples-per-class", str(args.per_class), "--eval-samples-per-class",
            "50", "--epochs", str(args.epochs), "--batch-size", "64", "--log-every", "0", "--no-progress", *extra]


def _sweep(args: argparse.Namespace, out: str, trials: int, pruner: str, fixed: list[str], kd: bool = False,
           enqueue: list[dict[str, Any]] | None = None, space: dict | None = None) -> tuple[Any, float]:
    """One sweep in this process through the library; (study, seconds)."""
    import optuna

    from trainer.api import train
    from trainer.sweep.engine import run_sweep
    from trainer.sweep.store import SweepArgs, storage_for
    from trainer.sweep.space import read_space
    from trainer.train_args import parse_args

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "space.json")
    with open(path, "w") as f:
        json.dump(space or SPACE, f)
    sweep = SweepArgs(read_space(path, kd), fixed, kd, trials, out, pruner=pruner, seed=0,
                      parse=lambda a: parse_args(a, kd=kd))
    if enqueue:
        study = optuna.create_study(storage=storage_for(None, out), study_name="sweep", direction="maximize")
        for params in enqueue:
            study.enqueue_trial(params)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        study = run_sweep(sweep, train, args.epochs, lambda line: None)
    return study, time.perf_counter() - start


def prune(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Pruned against unpruned on the same trials."""
    pruned, pruned_s = _sweep(args, os.path.join(tmp, "pruned"), args.trials, "median", _fixed(args))
    params = [t.params for t in pruned.trials]
    full, full_s = _sweep(args, os.path.join(tmp, "full"), args.trials, "none", _fixed(args), enqueue=params)
    states = [t.state.name for t in pruned.trials]
    return {"trials": args.trials, "pruned_s": round(pruned_s, 1), "unpruned_s": round(full_s, 1),
            "wall_ratio": round(pruned_s / full_s, 3), "trials_pruned": states.count("PRUNED"),
            "same_params": [t.params for t in full.trials] == params,
            "best_pruned": pruned.best_trial.params, "best_unpruned": full.best_trial.params,
            "same_best": pruned.best_trial.params == full.best_trial.params,
            "best_value_pruned": pruned.best_value, "best_value_unpruned": full.best_value}


def _process(args: argparse.Namespace, out: str, space: str, threads: int, log: Any, extra: Sequence[str] = (),
             new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-m", "trainer.sweep", "--space", space, "--trials", str(args.join_trials),
                             "--output-dir", out, "--pruner", "none", *extra, "--", *_fixed(args)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=new_session)


def join(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """One process against two on one SQLite study."""
    import optuna

    space = os.path.join(tmp, "space.json")
    with open(space, "w") as f:
        json.dump(SPACE, f)
    result: dict[str, Any] = {"trials": args.join_trials}
    for n in (1, 2):
        out = os.path.join(tmp, f"join{n}")
        os.makedirs(out)
        with open(os.path.join(tmp, f"join{n}.log"), "w") as log:
            start = time.perf_counter()
            procs = [_process(args, out, space, max(1, (os.cpu_count() or 2) // n), log) for _ in range(n)]
            codes = [p.wait() for p in procs]
            seconds = time.perf_counter() - start
        trials = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out}/sweep.db").trials
        dirs = [t.user_attrs.get("run_dir") for t in trials]
        result[f"{n}_process"] = {
            "seconds": round(seconds, 1), "exit_codes": codes, "trials_run": len(trials),
            "processes_that_ran_trials": len({t.user_attrs.get("pid") for t in trials}),
            "no_trial_twice": len(set(dirs)) == len(dirs) and len({t.number for t in trials}) == len(trials)
            and len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)}
    result["two_over_one_wall"] = round(result["2_process"]["seconds"] / result["1_process"]["seconds"], 3)
    return result


def rdb(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Two sweep processes on one database study, each with a folder of its own (two machines without a shared
    disk); one is SIGKILLed during its first trial and its folder removed (the machine is gone): the other finishes the
    study, its trial retried once the heartbeat is stale."""
    import optuna

    if not args.storage:
        raise SystemExit("--what rdb needs --storage URL (e.g. postgresql://user@host/db)")
    space = os.path.join(tmp, "space.json")
    with open(space, "w") as f:
        json.dump(SPACE, f)
    name, outs = f"bench-{int(time.time())}", [os.path.join(tmp, "rdb-a"), os.path.join(tmp, "rdb-b")]
    extra = ["--storage", args.storage, "--study-name", name]
    start = time.perf_counter()
    with open(os.path.join(tmp, "rdb-a.log"), "w") as log_a, open(os.path.join(tmp, "rdb-b.log"), "w") as log_b:
        doomed = _process(args, outs[0], space, 1, log_a, extra, new_session=True)
        deadline = time.time() + 300
        while not os.path.isfile(os.path.join(outs[0], "trial-0", "metrics.jsonl")):  # a trial under way
            if doomed.poll() is not None or time.time() > deadline:
                raise SystemExit(open(os.path.join(tmp, "rdb-a.log")).read())
            time.sleep(0.2)
        survivor = _process(args, outs[1], space, 1, log_b, extra)
        time.sleep(5)
        os.killpg(doomed.pid, signal.SIGKILL)
        killed_at = time.time()
        doomed.wait()
        shutil.rmtree(outs[0])
        code = survivor.wait()
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=name, storage=args.storage).trials
    failed = [t for t in trials if t.state.name == "FAIL"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") in {f.number for f in failed}]
    return {"trials": args.join_trials, "seconds": round(seconds, 1), "survivor_exit_code": code,
            "states": {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
            "killed_trials": [f.number for f in failed],
            "retried_as": [t.number for t in retries],
            "retry_same_params": bool(retries) and all(
                t.params == next(f.params for f in failed if f.number == t.system_attrs["failed_trial"])
                for t in retries),
            "retry_started_s_after_kill": [round(t.datetime_start.timestamp() - killed_at, 1) for t in retries
                                           if t.datetime_start is not None],
            "retry_run_dirs_here": all(str(t.user_attrs.get("run_dir", "")).startswith(outs[1]) for t in retries),
            "no_trial_twice": len({t.number for t in trials}) == len(trials)}


def kd(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """A distillation sweep over alpha and T with one shared cache: the teacher's share of the forwards."""
    from trainer.commands.train import main_cls

    args = argparse.Namespace(**{**vars(args), "epochs": args.kd_epochs})
    teacher = os.path.join(tmp, "teacher")
    with contextlib.redirect_stdout(io.StringIO()):
        main_cls([*MODEL, "--dataset", args.dataset, "--samples-per-class", str(args.per_class),
                  "--eval-samples-per-class", "50", "--epochs", str(args.epochs), "--batch-size", "64", "--lr", "1e-3",
                  "--log-every", "0", "--no-progress", "--output-dir", teacher])
    space = {"kd_alpha": {"choices": [0.3, 0.5, 0.7, 0.9]}, "kd_temperature": {"choices": [1.0, 2.0, 4.0]}}
    study, seconds = _sweep(args, os.path.join(tmp, "kd"), 6, "none", _fixed(args, "--teacher", teacher, "--lr",
                                                                              "1e-3"), kd=True, space=space)
    paid = sum(t.user_attrs.get("teacher_forwards", 0) for t in study.trials)
    online = sum(args.per_class * 10 * args.epochs for _ in study.trials)  # every image, every epoch, every trial
    return {"trials": len(study.trials), "seconds": round(seconds, 1), "teacher_forwards": paid,
            "online_teacher_forwards": online, "teacher_share": round(paid / online, 4),
            "best": study.best_trial.params, "best_value": study.best_value}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--what", default="prune,join,kd", help="prune, join, kd, rdb (comma-separated)")
    p.add_argument("--storage", default=None, help="rdb: the database URL both processes share")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--per-class", type=int, default=100, help="training images per class of every trial")
    p.add_argument("--epochs", type=int, default=3, help="epochs of every trial (prune, join)")
    p.add_argument("--join-trials", type=int, default=8)
    p.add_argument("--kd-epochs", type=int, default=5, help="epochs of the teacher and of every distillation trial")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args()
    from trainer.errors import quiet_libraries

    quiet_libraries()
    args.dataset = os.path.abspath(args.dataset)
    parts = {"prune": prune, "join": join, "kd": kd, "rdb": rdb}
    result: dict[str, Any] = {"benchmark": "sweep", "cores": os.cpu_count(), "per_class": args.per_class,
                              "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        for what in args.what.split(","):
            result[what] = parts[what](args, tmp)
            if not args.json:
                print(f"{what}: {json.dumps(result[what])}", flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
