"""A run killed with SIGKILL and resumed ends exactly where the run left alone ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.run_files import read_jsonl
from trainer.run_files import file_digest

from trainer.commands.train import main_cls

from .helpers import ROOT, SMALL_VIT, assert_same_run, run_here, strip_timing, wait_for_step

pytestmark = pytest.mark.slow  # every test here trains for real


def _args(dataset, out, cache_dir, *extra):
    return [*SMALL_VIT, "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "40", "--batch-size", "8", "--epochs", "3", "--lr", "2e-3", "--random-crop", "2",
            "--log-every", "4", "--eval-every", "9", "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference_run(toy_dataset, cache_dir, tmp_path_factory):
    """The run left alone (on the default store)."""
    ref = tmp_path_factory.mktemp("ref") / "ref"
    main_cls(_args(toy_dataset, ref, cache_dir))
    return ref


@pytest.mark.parametrize("data_on", ["device", "host", "disk"])
def test_sigkill_then_resume_matches_uninterrupted(toy_dataset, cache_dir, tmp_path, reference_run, data_on, capsys):
    """Whichever store serves the data, a killed and resumed run ends as the run left alone ends."""
    ref = reference_run
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "train_cls.py"), *_args(toy_dataset, out, cache_dir, "--checkpoint-every", "5",
                                                              "--keep-checkpoints", "2", "--data-on", data_on)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = out / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.startswith("step-") and int(p.name[5:]) >= 25 for p in ckpts.iterdir()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()
    kept = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step-"))
    assert 1 <= len(kept) <= 3  # --keep-checkpoints 2, plus possibly one being renamed into place

    res = run_here(main_cls, *_args(toy_dataset, out, cache_dir, "--checkpoint-every", "5", "--resume-from", "latest",
                                    "--data-on", data_on), capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"data: {data_on} store" in res.stdout
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    assert strip_timing(read_jsonl(str(out / "metrics.jsonl"))) == strip_timing(read_jsonl(str(ref / "metrics.jsonl")))
    s_ref = json.loads((ref / "summary.json").read_text())
    s_out = json.loads((out / "summary.json").read_text())
    assert s_out["final"] == s_ref["final"] and s_out["best_eval_top1"] == s_ref["best_eval_top1"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-55", "step-60"]  # --keep-checkpoints 2 (default)


def test_non_finite_loss_stops_with_the_step(toy_dataset, cache_dir, tmp_path):
    from trainer.api import train
    from trainer.train_args import parse_args
    from trainer.errors import UsageError
    from trainer.training.tasks import Classification

    class BreaksAtSeven(Classification):
        calls = 0

        def forward(self, model, batch):
            self.calls += 1
            out = super().forward(model, batch)
            if self.calls == 7:
                out.loss = out.loss * float("nan")
            return out

    out = tmp_path / "o"
    cfg = parse_args(_args(toy_dataset, out, cache_dir, "--checkpoint-every", "5"))
    with pytest.raises(UsageError, match="non-finite at step 7"):
        train(cfg, lambda cfg, setup: BreaksAtSeven(setup.model, setup.accelerator))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-5"]
    assert not (out / "model.safetensors").exists()


def test_resume_refuses_other_training_arguments(toy_dataset, cache_dir, tmp_path, capsys):
    out = tmp_path / "o"
    main_cls(_args(toy_dataset, out, cache_dir, "--epochs", "1", "--checkpoint-every", "epoch"))
    before = sorted(p.name for p in out.iterdir())
    res = run_here(main_cls, *_args(toy_dataset, out, cache_dir, "--epochs", "1", "--lr", "5e-3", "--resume-from",
                                    "latest"), capsys=capsys)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "other arguments (lr;" in lines[0] and "0.002 then, 0.005 now" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == before


def test_sigterm_saves_and_the_same_command_continues_exactly(toy_dataset, cache_dir, tmp_path, reference_run, capsys):
    """No --checkpoint-every: the checkpoint the signal asks for is the only one, and enough."""
    out = tmp_path / "preempted"
    args = _args(toy_dataset, out, cache_dir, "--resume-from", "auto")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_cls.py"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, out / "metrics.jsonl", 8)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert time.perf_counter() - sent < 30
    assert "stopped by SIGTERM after step" in err and "Traceback" not in err
    (ckpt,) = (out / "checkpoints").iterdir()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert 0 < state["micro"] < 20 and ckpt.name == f"step-{state['step']}"  # mid-epoch, after a whole step
    assert not (out / "model.safetensors").exists()
    assert max(r["step"] for r in read_jsonl(str(out / "metrics.jsonl"))) <= state["step"]

    res = run_here(main_cls, *args, capsys=capsys)  # the same command, as a scheduler requeues it
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {ckpt}" in res.stdout
    assert_same_run(reference_run, out)


class _Planted:
    """A pickle that, when loaded, writes a file: what a planted checkpoint file could do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_damaged_or_planted_checkpoints_are_skipped_and_none_whole_is_refused(toy_dataset, cache_dir, tmp_path,
                                                                             reference_run, monkeypatch, capsys):
    out = tmp_path / "damaged"
    args = _args(toy_dataset, out, cache_dir, "--checkpoint-every", "5", "--keep-checkpoints", "3",
                 "--resume-from", "auto")
    assert run_here(main_cls, *args, capsys=capsys).returncode == 0  # fresh: there was no checkpoint
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-50", "step-55", "step-60"]
    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in (ckpts / "step-60").iterdir()} == {
        p.name: 0o666 & ~umask for p in (ckpts / "step-60").iterdir()}  # one rule for all of a checkpoint's files
    for name in ("model.safetensors", "summary.json", "config.json"):  # as if it had died after step 60's save
        (out / name).unlink()
    with open(ckpts / "step-60" / "optimizer.bin", "r+b") as f:  # damaged without a change of size
        f.seek(os.path.getsize(f.name) // 2)
        f.write(b"\0" * 256)
    # Planted where accelerate's custom states go, listed in the manifest as if written there: it would run code.
    marker = tmp_path / "the-pickle-ran"
    planted = ckpts / "step-55" / "custom_checkpoint_0.pkl"
    torch.save(_Planted(str(marker)), planted)
    state = json.loads((ckpts / "step-55" / "trainer_state.json").read_text())
    state["files"][planted.name] = {"bytes": planted.stat().st_size, "sha256": file_digest(str(planted), "sha256")}
    (ckpts / "step-55" / "trainer_state.json").write_text(json.dumps(state))
    loads = []
    real_load = torch.load

    def recording_load(*a, **kw):
        loads.append(kw.get("weights_only"))
        return real_load(*a, **kw)

    monkeypatch.setattr(torch, "load", recording_load)
    res = run_here(main_cls, *args, capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    warnings = [line for line in res.stderr.splitlines() if "skipping the damaged" in line]
    assert len(warnings) == 2 and "step-60" in warnings[0] and "optimizer.bin differs from the digest" in warnings[0]
    assert "step-55" in warnings[1] and "custom_checkpoint_0.pkl is a pickle" in warnings[1]
    assert f"resuming from {ckpts / 'step-50'}" in res.stdout and not marker.exists()
    assert loads and all(w is True for w in loads), loads  # nothing read back may unpickle code
    assert_same_run(reference_run, out)
    monkeypatch.undo()

    for name in ("model.safetensors", "summary.json", "config.json"):  # died again (a finished run needs none of them)
        (out / name).unlink()
    (ckpts / "step-50" / "optimizer.bin").unlink()
    (ckpts / "step-55" / "trainer_state.json").write_text("{")
    os.truncate(ckpts / "step-60" / "random_states_0.pkl", 3)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    res = run_here(main_cls, *args, capsys=capsys)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert "no whole checkpoint" in line and "--overwrite" in line
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_failed_checkpoint_write_stops_with_one_line_and_keeps_the_previous(toy_dataset, cache_dir, tmp_path,
                                                                             reference_run, monkeypatch, capsys):
    import errno

    from accelerate import Accelerator

    out = tmp_path / "full"
    real_save = Accelerator.save_state
    calls = []

    def disk_full_on_the_second(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:
            os.makedirs(output_dir, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", disk_full_on_the_second)
    args = _args(toy_dataset, out, cache_dir, "--checkpoint-every", "25", "--resume-from", "auto")
    with pytest.raises(SystemExit) as stop:
        main_cls(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, lines
    assert f"could not write a checkpoint in {out / 'checkpoints'}" in lines[0]
    assert "No space left on device" in lines[0] and "free there" in lines[0]
    assert f"{out / 'checkpoints' / 'step-25'} is intact" in lines[0]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-25"]  # nothing half-written kept
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    res = run_here(main_cls, *args, capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {out / 'checkpoints' / 'step-25'}" in res.stdout
    assert_same_run(reference_run, out)
