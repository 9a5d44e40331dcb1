"""python -m trainer.sweep: the space file, pruning, failed trials, the report, resuming after SIGKILL, a second
process joining, a distillation sweep paying its teacher once, and what is refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trainer.commands.sweep import main as sweep_main

from .helpers import SMALL_VIT

pytest.importorskip("optuna", reason="the [sweep] extra (optuna) is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _space(tmp_path, space, name="space.json"):
    path = tmp_path / name
    path.write_text(json.dumps(space) if name.endswith(".json") else space)
    return str(path)


def _fixed(toy_dataset, cache_dir, *extra):
    return [*SMALL_VIT, "--dataset", str(toy_dataset), "--samples-per-class", "20", "--eval-samples-per-class", "5",
            "--batch-size", "16", "--epochs", "2", "--no-progress", "--cache-dir", str(cache_dir), *extra]


def _scripted(scores, calls):
    """A stand-in for trainer.api.train: eval top-1 per epoch from the trial's lr (scores[lr]); lr 'nan' diverges."""
    from trainer.errors import Diverged

    def train(cfg, on_epoch=None):
        calls.append(cfg.lr)
        if cfg.lr not in scores:
            raise Diverged("the loss became non-finite at step 3: lower --lr")
        for epoch in range(1, cfg.epochs + 1):
            on_epoch(epoch, {"eval_top1": scores[cfg.lr] * epoch / cfg.epochs, "eval_loss": 1.0})
        return {"final": {"eval_top1": scores[cfg.lr], "eval_loss": 1.0}}

    return train


def _sweep_args(tmp_path, toy_dataset, cache_dir, space, trials, **kw):
    from trainer.sweep.store import SweepArgs
    from trainer.sweep.space import read_space
    from trainer.train_args import parse_args

    return SweepArgs(read_space(_space(tmp_path, space), False), _fixed(toy_dataset, cache_dir, "--epochs", "4"),
                     False, trials, str(tmp_path / "sweep"), parse=lambda a: parse_args(a), **kw)


def test_the_pruner_stops_poor_trials_and_a_diverged_trial_fails_while_the_sweep_goes_on(tmp_path, toy_dataset,
                                                                                         cache_dir):
    from trainer.sweep.engine import run_sweep
    from trainer.sweep.report import write_report

    scores = {0.001: 0.9, 0.002: 0.8, 0.003: 0.85, 0.0001: 0.1}  # 0.5: not a score, diverges
    calls: list = []
    args = _sweep_args(tmp_path, toy_dataset, cache_dir, {"lr": {"choices": [0.001, 0.002, 0.003, 0.0001, 0.5]}}, 12,
                       seed=0)
    study = run_sweep(args, _scripted(scores, calls), 4, lambda line: None)
    record = write_report(study, args.output_dir)
    states = {t["number"]: t["state"] for t in record["trials"]}
    assert len(states) == 12 and len(calls) == 12  # every trial trained once
    by_lr = {}
    for t in record["trials"]:
        by_lr.setdefault(t["params"]["lr"], set()).add(t["state"])
    assert by_lr.get(0.5, {"FAIL"}) == {"FAIL"} and 0.5 in by_lr  # diverged: failed, and the sweep went on
    pruned = [t for t in record["trials"] if t["state"] == "PRUNED"]
    poor_late = [t for t in record["trials"] if t["params"]["lr"] == 0.0001 and t["number"] >= 3]
    assert pruned and all(t["state"] == "PRUNED" for t in poor_late)  # after 3 trials, the poor one is cut short
    assert all(len(t["epochs"]) < 4 for t in pruned) and len(calls) == len(record["trials"])
    complete = [t for t in record["trials"] if t["state"] == "COMPLETE"]
    assert all(t["epochs"] == pytest.approx([scores[t["params"]["lr"]] * e / 4 for e in (1, 2, 3, 4)]) for t in complete)
    assert record["best"]["params"] == {"lr": 0.001} and record["best"]["value"] == 0.9
    fail = next(t for t in record["trials"] if t["state"] == "FAIL")
    assert "non-finite" in fail["error"] and fail["run_dir"].endswith(f"trial-{fail['number']}")
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "**Best: trial" in md and md.count("| PRUNED |") == len(pruned)
    for png in ("history.png", "slices.png"):
        assert (tmp_path / "sweep" / png).read_bytes()[:4] == b"\x89PNG"
    from trainer.study.report_writer import sweep_lines  # a study's report links the sweeps kept in its folder

    best = record["best"]
    assert sweep_lines(str(tmp_path))[-1] == (f"- [sweep](sweep/sweep.md): 12 trials; best trial {best['number']}, "
                                              "eval_top1 0.9000 with lr 0.001")


def test_a_retried_trial_resumes_its_folder_only_where_this_machine_has_it(tmp_path, toy_dataset, cache_dir):
    from types import SimpleNamespace

    from trainer.sweep.engine import run_dir

    args = _sweep_args(tmp_path, toy_dataset, cache_dir, {"lr": {"choices": [0.001]}}, 1)
    here = tmp_path / "sweep" / "trial-2"
    here.mkdir(parents=True)
    assert run_dir(args, SimpleNamespace(number=7, user_attrs={"run_dir": str(here)})) == str(here)
    # Retried from a machine whose disk this one does not share: a fresh start in this sweep's own folder.
    gone = SimpleNamespace(number=7, user_attrs={"run_dir": "/nonexistent/other-machine/trial-2"})
    assert run_dir(args, gone) == os.path.join(args.output_dir, "trial-7")
    assert run_dir(args, SimpleNamespace(number=3, user_attrs={})) == os.path.join(args.output_dir, "trial-3")


def test_a_trial_with_bad_arguments_stops_the_sweep_with_its_line(tmp_path, toy_dataset, cache_dir, capsys,
                                                                 monkeypatch):
    from trainer.errors import UsageError
    import trainer.api as api

    def refuses(cfg, on_epoch=None):
        raise UsageError("--dataset nowhere does not exist: pass a hub id or a local folder")

    monkeypatch.setattr(api, "train", refuses)
    with pytest.raises(SystemExit) as stop:
        sweep_main(["--space", _space(tmp_path, {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}), "--trials", "3",
                    "--output-dir", str(tmp_path / "s"), "--", *_fixed(toy_dataset, cache_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err == ["error: --dataset nowhere does not exist: pass a hub id or a local folder"]
    import optuna

    trials = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 's' / 'sweep.db'}").trials
    assert [t.state.name for t in trials] == ["FAIL"]  # the first trial, and no other


@pytest.mark.parametrize("space, extra, message", [
    ("{lr: [", [], "does not parse"),
    ({"learning_rate": {"low": 0.1, "high": 1}}, [], "'learning_rate' is not an option of train_cls.py"),
    ({"kd_alpha": {"choices": [0.5]}}, [], "'kd_alpha' is not an option of train_cls.py"),
    ({"lr": {"low": 0.1, "high": 0.01}}, [], "low 0.1 is above high 0.01"),
    ({"lr": {"low": 0, "high": 0.01, "log": True}}, [], "a log range needs low > 0"),
    ({"epochs": {"low": 1.5, "high": 3}}, [], "is a whole number"),
    ({"lr": {"low": -1, "high": 0.01}}, [], "--lr must be"),
    ({"lr": {"choices": []}}, [], "choices must be a non-empty list"),
    ({"lr": {"low": 1e-4, "high": 1e-2}}, ["--trials", "0"], "--trials must be at least 1"),
    ({"lr": {"low": 1e-4, "high": 1e-2}}, ["--storage", "sqlite:////no/such/folder/x.db"], "cannot be reached"),
    ({"lr": {"low": 1e-4, "high": 1e-2}}, ["--storage", "mysql://u@h/db"], "MySQLdb is not installed: pip install mysql"),
    ({"lr": {"low": 1e-4, "high": 1e-2}}, ["--fixed-lr"], "--lr is both swept"),
    ({"lr": {"low": 1e-4, "high": 1e-2}}, ["--fixed-out"], "--output-dir is the sweep's to set"),
])
def test_bad_sweep_input_is_one_line_and_writes_nothing(tmp_path, toy_dataset, cache_dir, capsys, space, extra,
                                                        message):
    path = _space(tmp_path, space, "space.yaml" if isinstance(space, str) else "space.json")
    ours = [a for a in extra if not a.startswith("--fixed")]
    fixed = _fixed(toy_dataset, cache_dir, *(["--lr", "0.1"] if "--fixed-lr" in extra else []),
                   *(["--output-dir", "x"] if "--fixed-out" in extra else []))
    with pytest.raises(SystemExit) as stop:
        sweep_main(["--space", path, "--trials", "2", "--output-dir", str(tmp_path / "s"), *ours, "--", *fixed])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "s").exists()


def test_a_study_with_another_space_or_direction_is_refused(tmp_path, toy_dataset, cache_dir, capsys):
    from trainer.sweep.engine import run_sweep

    args = _sweep_args(tmp_path, toy_dataset, cache_dir, {"lr": {"choices": [0.001]}}, 1)
    run_sweep(args, _scripted({0.001: 0.5}, []), 4, lambda line: None)
    for other, extra in (({"lr": {"choices": [0.002]}}, []), ({"lr": {"choices": [0.001]}}, ["--direction",
                                                                                              "minimize"])):
        with pytest.raises(SystemExit) as stop:
            sweep_main(["--space", _space(tmp_path, other), "--trials", "2", "--output-dir", args.output_dir, *extra,
                        "--", *_fixed(toy_dataset, cache_dir, "--epochs", "4")])
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1 and "exists in this storage with another space" in err[0]


@pytest.mark.slow
def test_a_real_sweep_reports_what_its_runs_measured(tmp_path, toy_dataset, cache_dir, capsys):
    out = tmp_path / "s"
    record = sweep_main(["--space", _space(tmp_path, {"lr": {"low": 1e-3, "high": 3e-3, "log": True}}), "--trials",
                         "2", "--output-dir", str(out), "--pruner", "none", "--", *_fixed(toy_dataset, cache_dir)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["best"] == record["best"]
    assert [t["state"] for t in record["trials"]] == ["COMPLETE", "COMPLETE"]
    for t in record["trials"]:
        summary = json.loads(open(os.path.join(t["run_dir"], "summary.json")).read())
        cfg = json.loads(open(os.path.join(t["run_dir"], "config.json")).read())["training_args"]
        evals = [json.loads(line)["top1"] for line in open(os.path.join(t["run_dir"], "metrics.jsonl"))
                 if json.loads(line)["event"] == "eval"]
        assert t["value"] == summary["final"]["eval_top1"] and t["epochs"] == evals and len(evals) == 2
        assert cfg["lr"] == t["params"]["lr"] and t["run_dir"] == str(out / f"trial-{t['number']}")
    assert json.loads((out / "sweep.json").read_text()) == record


@pytest.mark.slow
def test_a_sweep_that_ends_beside_another_process_trial_says_it_is_still_running(tmp_path, toy_dataset, cache_dir,
                                                                                 capsys):
    import optuna

    from trainer.sweep.store import storage_for

    out = tmp_path / "s"
    out.mkdir()
    args = ["--space", _space(tmp_path, {"lr": {"choices": [0.002]}}), "--trials", "2", "--output-dir", str(out),
            "--pruner", "none", "--", *_fixed(toy_dataset, cache_dir, "--epochs", "1")]
    sweep_main(args[:3] + ["1"] + args[4:])  # the study, with this space
    running = optuna.load_study(study_name="sweep", storage=storage_for(None, str(out))).ask()  # a live process's
    running.set_user_attr("pid", os.getpid())
    capsys.readouterr()
    record = sweep_main(args)
    said = capsys.readouterr().out
    assert record["states"] == {"COMPLETE": 1, "PRUNED": 0, "FAIL": 0, "RUNNING": 1}  # it did not wait, nor run a third
    assert "1 trial(s) still running in other processes of the study" in said


def _launch(space, out, fixed, trials, log):
    return subprocess.Popen([sys.executable, "-m", "trainer.sweep", "--space", space, "--trials", str(trials),
                             "--output-dir", str(out), "--pruner", "none", "--", *fixed], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_a_killed_sweep_started_again_resumes_its_trial_from_its_checkpoint(tmp_path, toy_dataset, cache_dir):
    out = tmp_path / "s"
    space = _space(tmp_path, {"lr": {"choices": [0.002]}})
    fixed = _fixed(toy_dataset, cache_dir, "--epochs", "3", "--checkpoint-every", "epoch", "--samples-per-class", "60")
    with open(tmp_path / "first.log", "w") as log:
        first = _launch(space, out, fixed, 1, log)
        deadline = time.time() + 240
        saved = out / "trial-0" / "checkpoints"
        while not (saved.is_dir() and any(n.startswith("step-") for n in os.listdir(saved))):  # a whole one
            assert first.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (out / "trial-0" / "summary.json").exists()
    with open(tmp_path / "second.log", "w") as log:
        assert _launch(space, out, fixed, 1, log).wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    said = (tmp_path / "second.log").read_text()
    assert "trial 0 was left running by a process that is gone" in said
    assert "resuming from" in said  # the trainer's --resume-from auto took the checkpoint
    record = json.loads((out / "sweep.json").read_text())
    assert [t["state"] for t in record["trials"]] == ["FAIL", "COMPLETE"]  # killed, then its retry
    assert record["trials"][1]["run_dir"] == str(out / "trial-0") and not (out / "trial-1").exists()
    # The epochs it reported before the kill are carried over; the resumed run reports the rest, not the first again.
    assert 2 <= len(record["best"]["epochs"]) <= 3


@pytest.mark.slow
def test_a_second_process_joins_the_study_and_no_trial_runs_twice(tmp_path, toy_dataset, cache_dir):
    out = tmp_path / "s"
    space = _space(tmp_path, {"lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    fixed = _fixed(toy_dataset, cache_dir, "--epochs", "2", "--samples-per-class", "60")
    out.mkdir()
    with open(tmp_path / "a.log", "w") as a, open(tmp_path / "b.log", "w") as b:
        procs = [_launch(space, out, fixed, 4, a)]
        deadline = time.time() + 120
        while not (out / "trial-0").is_dir():  # the second joins a study that is under way
            assert procs[0].poll() is None and time.time() < deadline, (tmp_path / "a.log").read_text()
            time.sleep(0.1)
        procs.append(_launch(space, out, fixed, 4, b))
        assert [p.wait(timeout=300) for p in procs] == [0, 0], (tmp_path / "a.log").read_text()
    import optuna

    trials = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'sweep.db'}").trials
    pids = {t.user_attrs["pid"] for t in trials}
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(pids) == 2 and 4 <= len(trials) <= 5  # both worked; a race at the last trial may add one
    assert len(set(dirs)) == len(dirs) and all(os.path.isfile(os.path.join(d, "summary.json")) for d in dirs)


@pytest.mark.slow
def test_a_distillation_sweep_pays_the_teacher_once(tmp_path, toy_dataset, cache_dir, small_run, capsys):
    out = tmp_path / "kd"
    record = sweep_main(["--space", _space(tmp_path, {"kd-alpha": {"choices": [0.5, 0.9]}, "kd_temperature": {
        "choices": [2.0, 4.0]}}), "--trials", "3", "--output-dir", str(out), "--pruner", "none", "--",
        *_fixed(toy_dataset, cache_dir, "--teacher", str(small_run), "--epochs", "1")])
    forwards = [json.loads(open(os.path.join(t["run_dir"], "summary.json")).read())["teacher_cache_forwards"]
                for t in record["trials"]]
    assert forwards[0] > 0 and forwards[1:] == [0, 0]  # the first trial filled the cache, the others read it
    assert record["teacher_forwards"] == forwards[0] and (out / "teacher-cache").is_dir()
    assert "paid" in (out / "sweep.md").read_text()


@pytest.mark.slow
def test_a_sweep_under_two_processes_trains_each_trial_on_both(tmp_path, toy_dataset, cache_dir):
    from .test_multiprocess import torchrun

    out = tmp_path / "s"
    done = torchrun(2, "-m", "trainer.sweep", "--space", _space(tmp_path, {"lr": {"low": 1e-3, "high": 3e-3}}),
                    "--trials", "2", "--output-dir", str(out), "--", *_fixed(toy_dataset, cache_dir, "--epochs", "1"))
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "sweep.json").read_text())
    assert [t["state"] for t in record["trials"]] == ["COMPLETE", "COMPLETE"]
    for t in record["trials"]:
        line = open(os.path.join(t["run_dir"], "metrics.jsonl")).readline()
        assert json.loads(line)  # one log, written by the main process
        assert "2 process(es)" in done.stdout


def test_a_distillation_trial_shares_the_sweep_teacher_cache_unless_the_user_names_one(tmp_path, toy_dataset,
                                                                                       cache_dir):
    from trainer.sweep.engine import trial_argv
    from trainer.sweep.space import read_space
    from trainer.sweep.store import SweepArgs
    from trainer.train_args import parse_args

    space = read_space(_space(tmp_path, {"kd_alpha": {"choices": [0.5]}}), True)
    for own, expected in (([], str(tmp_path / "s" / "teacher-cache")), (["--teacher-cache-dir", "mine"], "mine")):
        args = SweepArgs(space, _fixed(toy_dataset, cache_dir, "--teacher", str(tmp_path), *own), True, 1,
                         str(tmp_path / "s"))
        cfg = parse_args(trial_argv(args, {"kd_alpha": 0.5}, str(tmp_path / "s" / "trial-0")), kd=True)
        assert cfg.teacher_cache_dir == expected and cfg.kd_alpha == 0.5
        assert cfg.output_dir == str(tmp_path / "s" / "trial-0") and cfg.resume_from == "auto"
