"""A hyperparameter sweep over Optuna: each trial a run of train_cls.py (or, with --teacher among the fixed
arguments, train_kd.py) in DIR/trial-N, evaluated after every epoch and pruned by Optuna's pruner.

    python -m trainer.sweep --space space.yaml --trials 12 --output-dir runs/sweep -- --dataset uoft-cs/cifar10 ...
    python -m trainer.sweep --space kd.yaml --trials 6 --output-dir runs/kd -- --teacher runs/part2 ...

SPACE maps each swept option (a flag without its dashes: lr, weight-decay or weight_decay) to a range or choices:
{"lr": {"low": 1e-4, "high": 1e-2, "log": true}, "kd_alpha": {"choices": [0.5, 0.9]},
"epochs": {"low": 2, "high": 5, "step": 1}}. The study lives in DIR/sweep.db (SQLite) unless --storage names an
RDB URL (postgresql://, mysql://) or journal:PATH on a shared filesystem: the same command started again continues
it (a trial its process left behind resumes from its folder), and the same command on other processes or machines
joins it. A distillation sweep shares one teacher cache (DIR/teacher-cache unless --teacher-cache-dir is given).
DIR/sweep.json and DIR/sweep.md (with plots) are written after every sweep; the last stdout line is the best trial.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Optional, Sequence

from ..argparsing import OneLineParser, gives
from ..errors import UsageError, exit_on_usage_error


def build_parser() -> OneLineParser:
    """The command line of trainer.sweep (the training arguments follow --)."""
    p = OneLineParser(prog="python -m trainer.sweep", description=__doc__)
    p.add_argument("--space", required=True, help="a YAML or JSON file: option -> range or choices")
    p.add_argument("--trials", type=int, required=True, help="trials in the study, all processes together")
    p.add_argument("--output-dir", required=True, help="the sweep's folder: trial-N/, sweep.db, sweep.json, sweep.md")
    p.add_argument("--storage", default=None, help="an RDB URL or journal:PATH (default: sqlite in --output-dir)")
    p.add_argument("--study-name", default="sweep")
    p.add_argument("--direction", choices=["maximize", "minimize"], default="maximize")
    p.add_argument("--metric", choices=["eval_top1", "eval_loss"], default="eval_top1",
                   help="what each epoch reports and the trial returns")
    p.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median")
    p.add_argument("--sampler-seed", type=int, default=None, help="TPE's seed (one process: a repeatable sweep)")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Parse, sweep, write the report, print the best trial as JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, fixed = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(ours)
    from ..api import train
    from ..distributed import end_processes
    from ..sweep.engine import check_args, run_sweep
    from ..sweep.report import SWEEP_JSON, write_report
    from ..sweep.space import corners, read_space
    from ..sweep.store import GRACE_S, SweepArgs
    from ..train_args import parse_args

    kd = gives(fixed, "--teacher")
    script = "train_kd.py" if kd else "train_cls.py"
    if not fixed:
        raise UsageError(f"no training arguments: pass {script}'s after --, e.g. -- --dataset uoft-cs/cifar10")
    space = read_space(args.space, kd)
    sweep = SweepArgs(space, fixed, kd, args.trials, args.output_dir, args.storage, args.study_name, args.direction,
                      args.metric, args.pruner, args.sampler_seed,
                      parse=lambda a: parse_args(a, kd=kd, prog=f"{script} (a sweep trial)"))
    check_args(sweep, corners(space))
    epochs = parse_args([*fixed, "--output-dir", args.output_dir], kd=kd).epochs
    study = run_sweep(sweep, train, epochs, lambda line: print(f"sweep: {line}", flush=True))
    if study is None:  # one of a trial's other processes (accelerate launch): the main one reports
        end_processes()
        return {}
    record = write_report(study, args.output_dir)
    end_processes()
    states = ", ".join(f"{n} {s.lower()}" for s, n in record["states"].items() if n)
    best = record["best"]
    print(f"sweep: {len(record['trials'])} trials ({states})" + (
        f"; best trial {best['number']}: {args.metric} {best['value']:.4f} with {best['params']}" if best else "")
        + f"; {args.output_dir}/{SWEEP_JSON}, sweep.md", flush=True)
    out = {"best": best, "states": record["states"], "teacher_forwards": record["teacher_forwards"]}
    if record["states"].get("RUNNING"):
        print(f"sweep: {record['states']['RUNNING']} trial(s) still running in other processes of the study: where "
              "such a process is gone, a sweep started again on its machine retries its trial at once (and, with "
              f"SQLite or a database storage, so does any sweep process that starts a trial {GRACE_S} s after the "
              "trial's last heartbeat)", flush=True)
    print(json.dumps(out), flush=True)
    return record
