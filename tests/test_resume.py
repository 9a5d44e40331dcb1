"""A run killed with SIGKILL and resumed ends exactly where the run left alone ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from trainer.metrics import read_jsonl

from .conftest import ROOT, SMALL_VIT, run_script

pytestmark = pytest.mark.slow  # every test here trains for real


def _args(dataset, out, cache_dir, *extra):
    return [*SMALL_VIT, "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "40", "--batch-size", "8", "--epochs", "3", "--lr", "2e-3", "--random-crop", "2",
            "--log-every", "4", "--eval-every", "9", "--no-progress", *extra]


def _strip_timing(records):
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


@pytest.fixture(scope="module")
def reference_run(toy_dataset, cache_dir, tmp_path_factory):
    """The run left alone (on the default store)."""
    ref = tmp_path_factory.mktemp("ref") / "ref"
    assert run_script("train_cls.py", *_args(toy_dataset, ref, cache_dir)).returncode == 0
    return ref


@pytest.mark.parametrize("data_on", ["device", "host", "disk"])
def test_sigkill_then_resume_matches_uninterrupted(toy_dataset, cache_dir, tmp_path, reference_run, data_on):
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

    res = run_script("train_cls.py", *_args(toy_dataset, out, cache_dir, "--checkpoint-every", "5",
                                            "--resume-from", "latest", "--data-on", data_on))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"data: {data_on} store" in res.stdout
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    assert _strip_timing(read_jsonl(str(out / "metrics.jsonl"))) == _strip_timing(read_jsonl(str(ref / "metrics.jsonl")))
    s_ref = json.loads((ref / "summary.json").read_text())
    s_out = json.loads((out / "summary.json").read_text())
    assert s_out["final"] == s_ref["final"] and s_out["best_eval_top1"] == s_ref["best_eval_top1"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-55", "step-60"]  # --keep-checkpoints 2 (default)


def test_non_finite_loss_stops_with_the_step(toy_dataset, cache_dir, tmp_path):
    from trainer.api import train
    from trainer.config import parse_args
    from trainer.errors import UsageError
    from trainer.tasks import Classification

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
        train(cfg, BreaksAtSeven())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-5"]
    assert not (out / "model.safetensors").exists()


def test_resume_refuses_other_training_arguments(toy_dataset, cache_dir, tmp_path):
    out = tmp_path / "o"
    assert run_script("train_cls.py", *_args(toy_dataset, out, cache_dir, "--epochs", "1",
                                             "--checkpoint-every", "epoch")).returncode == 0
    before = sorted(p.name for p in out.iterdir())
    res = run_script("train_cls.py", *_args(toy_dataset, out, cache_dir, "--epochs", "1", "--lr", "5e-3",
                                            "--resume-from", "latest"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "other arguments (lr;" in lines[0] and "0.002 then, 0.005 now" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == before
