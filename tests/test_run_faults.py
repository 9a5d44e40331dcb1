"""A run in a hostile place: a disk that fills up at a checkpoint or at the final files (a real small tmpfs), a signal
while the final files are written or while images are decoded, two runs on one folder, a read-only folder. Nothing
that had been written is lost, no temporary file outlives the run, and each ends in one line (exit code 2, or 75 for a
signal)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.commands.train import main_cls
from trainer.run_files import read_jsonl

from .helpers import (CIFAR10, ROOT, SMALL_VIT, SmallDisk, assert_same_run, files_under, needs_cifar10, run_here,
                      wait_for_step)

pytestmark = pytest.mark.slow
TINY = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=8", "depth=1",
        "embed_dim=48", "num_heads=2"]  # a checkpoint of about 0.3 MB


def _args(dataset, out, cache_dir, *extra, model=SMALL_VIT):
    return [*model, "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "20", "--batch-size", "8", "--epochs", "2", "--lr", "2e-3", "--no-progress", *extra]


def _one_line(res, *needles):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_full_disk_at_the_final_files_leaves_no_half_run_and_a_plain_rerun_works(toy_dataset, cache_dir, tmp_path,
                                                                                  capsys):
    with SmallDisk(tmp_path / "disk", "1m") as disk:  # the log fits, the 4 MB model does not
        out = disk / "run"
        args = _args(toy_dataset, out, cache_dir)
        res = run_here(main_cls, *args, capsys=capsys)
        _one_line(res, f"could not write {out / 'model.safetensors'}", "No space left on device",
                  "no resumable checkpoint exists")
        assert files_under(out) == ["metrics.jsonl"]  # no model without its config, no temporary file
        SmallDisk.resize(SmallDisk(disk, ""), "64m")
        again = run_here(main_cls, *args, capsys=capsys)  # the same command, nothing added
        assert again.returncode == 0, again.stderr[-3000:]
        assert "holds the log of a run that ended before its first checkpoint: starting afresh" in again.stderr
        assert {"model.safetensors", "config.json", "summary.json"} <= set(files_under(out))


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_and_resumes_exactly(toy_dataset, cache_dir, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert main_cls(_args(toy_dataset, ref, cache_dir, "--checkpoint-every", "5", model=TINY))
    one = sum(p.stat().st_size for p in (ref / "checkpoints" / "step-20").iterdir())
    with SmallDisk(tmp_path / "disk", f"{(one * 3 // 2) // 4096 * 4 + 8}k") as disk:  # one checkpoint, not two
        out = disk / "run"
        args = _args(toy_dataset, out, cache_dir, "--checkpoint-every", "5", "--resume-from", "auto", model=TINY)
        res = run_here(main_cls, *args, capsys=capsys)
        _one_line(res, f"could not write a checkpoint in {out / 'checkpoints'}", "free there",
                  f"the previous checkpoint {out / 'checkpoints' / 'step-5'} is intact")
        assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-5"]  # no .tmp-step-10 filling the disk
        SmallDisk.resize(SmallDisk(disk, ""), "64m")
        again = run_here(main_cls, *args, capsys=capsys)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"resuming from {out / 'checkpoints' / 'step-5'}" in again.stdout
        assert_same_run(ref, out)


def test_sigterm_while_the_final_files_are_written_completes_them(toy_dataset, cache_dir, tmp_path, capfd,
                                                                 monkeypatch):
    import trainer.training.loop as loop

    real = loop.write_run_files

    def signalled(*a, **k):  # the scheduler's SIGTERM arrives as the run starts writing its files
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(loop, "write_run_files", signalled)
    out = tmp_path / "run"
    res = run_here(main_cls, *_args(toy_dataset, out, cache_dir, "--epochs", "1"), capsys=capfd)  # os.write: fd 2
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SIGTERM received: the training is done: finishing the run's final files first" in res.stderr
    assert files_under(out) == ["README.md", "config.json", "curves.png", "eval_predictions.safetensors",
                                "metrics.jsonl", "model.safetensors", "summary.json"]


def test_a_read_only_output_folder_is_refused_before_anything_is_decoded(toy_dataset, tmp_path, capsys):
    with SmallDisk(tmp_path / "disk", "1m") as disk:
        SmallDisk.resize(SmallDisk(disk, ""), "1m", read_only=True)
        res = run_here(main_cls, *_args(toy_dataset, disk / "run", tmp_path / "cache"), capsys=capsys)
        _one_line(res, f"--output-dir {disk / 'run'} cannot be made or opened (Read-only file system)")
    assert not (tmp_path / "cache").exists()


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train_cls.py"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_a_second_run_on_a_folder_in_use_is_refused_and_the_first_is_untouched(toy_dataset, cache_dir, tmp_path):
    out = tmp_path / "run"
    args = _args(toy_dataset, out, cache_dir, "--epochs", "500", "--log-every", "1")
    first = _start(*args)  # long enough that it is still training when the second has started
    wait_for_step(first, out / "metrics.jsonl", 2)
    second = subprocess.run([sys.executable, str(ROOT / "train_cls.py"), *args, "--overwrite"], cwd=ROOT,
                            capture_output=True, text=True)
    _one_line(second, f"--output-dir {out} is in use by another run right now")
    assert first.poll() is None  # still training
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=300) == 75, first.communicate()[1][-3000:]
    steps = [r["step"] for r in read_jsonl(str(out / "metrics.jsonl")) if r["event"] == "train"]
    assert steps == sorted(set(steps)) and steps[0] == 1  # one run's log, whole


def _workers_of(marker: str) -> list[int]:
    """Processes whose command line holds the marker (a decode's workers are forks of the run: the same line)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            pass
    return found


def _decoding(cache: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cache.is_dir() and any(".tmp" in p for p in os.listdir(cache)):
            time.sleep(0.5)  # the workers are at it
            return
        time.sleep(0.02)
    raise AssertionError(f"decoding never started: {proc.communicate()[1][-2000:]}")


@needs_cifar10
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_while_decoding_leaves_no_worker_and_no_temporary_file(sig, tmp_path):
    cache = tmp_path / "cache"
    args = [*SMALL_VIT, "--dataset", str(CIFAR10), "--samples-per-class", "all", "--output-dir", str(tmp_path / "run"),
            "--cache-dir", str(cache), "--no-progress"]
    proc = _start(*args)
    _decoding(cache, proc)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    deadline = time.time() + 30
    while _workers_of(str(cache)) and time.time() < deadline:
        time.sleep(0.1)
    assert not _workers_of(str(cache))  # the workers ended with their parent
    if sig == signal.SIGTERM:
        err = proc.communicate()[1]
        assert code == 75 and err.strip().splitlines() == [
            "stopped by SIGTERM before training began (nothing trained, nothing to resume): run the same command again "
            "to start"], err[-3000:]
        assert not [p for p in os.listdir(cache) if ".tmp" in p] and not (tmp_path / "run").exists()
        return
    assert any(".tmp" in p for p in os.listdir(cache))  # SIGKILL leaves its file; the next decode removes it
    from trainer.data.loading import load_data

    load_data(str(CIFAR10), samples_per_class=2, eval_samples_per_class=2, cache_dir=str(cache))
    assert not [p for p in os.listdir(cache) if ".tmp" in p]
