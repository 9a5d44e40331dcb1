"""What a sweep leaves for its reader: DIR/sweep.json (every trial: state, parameters, value, top-1 per epoch,
seconds, run folder; the best; the teacher forwards the sweep paid) and DIR/sweep.md with Optuna's plots."""
from __future__ import annotations

import os
import warnings
from typing import Any

from ..run_files import write_json, write_text

SWEEP_JSON, SWEEP_MD = "sweep.json", "sweep.md"
PLOTS = {"history.png": "plot_optimization_history", "slices.png": "plot_slice",
         "importance.png": "plot_param_importances"}


def _trial(t: Any) -> dict[str, Any]:
    start, end = t.datetime_start, t.datetime_complete
    return {"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
            "epochs": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
            "seconds": t.user_attrs.get("seconds", round((end - start).total_seconds(), 2) if start and end else None),
            "run_dir": t.user_attrs.get("run_dir"), **({"error": t.user_attrs["error"]} if "error" in t.user_attrs
                                                     else {})}


def sweep_record(study: Any) -> dict[str, Any]:
    """sweep.json's content."""
    from optuna.trial import TrialState

    every = study.get_trials(deepcopy=False)  # one read of the storage (a database on another machine)
    trials = [_trial(t) for t in every]
    done = [t for t in every if t.state == TrialState.COMPLETE]
    pick = max if study.direction.name == "MAXIMIZE" else min
    best = _trial(pick(done, key=lambda t: t.value)) if done else None
    forwards = [t.user_attrs["teacher_forwards"] for t in every if "teacher_forwards" in t.user_attrs]
    return {"study_name": study.study_name, "direction": study.direction.name.lower(),
            "metric": study.user_attrs.get("metric"), "space": study.user_attrs.get("space"),
            "fixed": study.user_attrs.get("fixed"), "trials": trials, "best": best,
            "states": {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
            "teacher_forwards": sum(forwards) if forwards else None}


def _plots(study: Any, folder: str) -> list[str]:
    """Optuna's matplotlib plots of the study, those it can draw (importance needs two finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    made = []
    for name, fn in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                ax = getattr(vis, fn)(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.savefig(os.path.join(folder, name), dpi=100, bbox_inches="tight")
            plt.close(fig)
            made.append(name)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
    return made


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_report(study: Any, folder: str) -> dict[str, Any]:
    """Write sweep.json, the plots and sweep.md; return sweep.json's content."""
    record = sweep_record(study)
    write_json(os.path.join(folder, SWEEP_JSON), record)
    plots = _plots(study, folder)
    names = [d["name"] for d in record["space"] or []]
    lines = [f"# Sweep `{record['study_name']}`", "",
             f"{len(record['trials'])} trials, " + ", ".join(f"{n} {s.lower()}" for s, n in record["states"].items()
                                                           if n) + f"; {record['direction']} {record['metric']}.", ""]
    if record["best"] is not None:
        b = record["best"]
        lines += [f"**Best: trial {b['number']}**, {record['metric']} {b['value']:.4f}, with "
                  + ", ".join(f"`{k}` {_cell(v)}" for k, v in b["params"].items()) + f" (run folder `{b['run_dir']}`).",
                  ""]
    if record["teacher_forwards"] is not None:
        lines += [f"The whole sweep paid {record['teacher_forwards']} teacher forwards (one shared teacher cache).", ""]
    lines += ["| trial | state | " + " | ".join(names) + f" | {record['metric']} | per epoch | seconds |",
              "| ---: | --- |" + " ---: |" * len(names) + " ---: | --- | ---: |"]
    for t in record["trials"]:
        lines.append(f"| {t['number']} | {t['state']} | " + " | ".join(_cell(t["params"].get(n)) for n in names)
                     + f" | {_cell(t['value'])} | {' '.join(f'{v:.3f}' for v in t['epochs'])} | {_cell(t['seconds'])} |")
    if plots:
        lines += [""] + [f"![{p[:-4]}]({p})" for p in plots]
    write_text(os.path.join(folder, SWEEP_MD), "\n".join(lines) + "\n")
    return record
