"""What a person meets at the command line: --help that answers at once (the library is imported after parsing) and
shows every default, example commands kept as written, a readable line before the JSON, a finished run that a
requeued job leaves alone, and hub weights that cannot be had found before any image is decoded."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from trainer.commands.train import main_cls
from trainer.training.loop import rate

from .helpers import ROOT, SMALL_VIT, run_here, run_script

DOORS = ["train_cls.py", "train_kd.py", "-m trainer.evaluate", "-m trainer.export", "-m trainer.benchmark",
         "-m trainer.predict", "-m trainer.plot", "-m trainer.push", "-m trainer.study", "-m trainer.study.report"]
PROBE = """
import runpy, sys
door = sys.argv[1]
sys.argv = [door, "--help"]
try:
    if door.endswith(".py"):
        runpy.run_path(door, run_name="__main__")
    else:
        runpy.run_module(door, run_name="__main__", alter_sys=True)
except SystemExit as stop:
    print("EXIT", stop.code)
print("HEAVY", sorted(m for m in ("torch", "timm", "datasets", "accelerate") if m in sys.modules))
"""


@pytest.mark.parametrize("door", DOORS)
def test_help_answers_without_importing_the_heavy_libraries(door):
    target = str(ROOT / door) if door.endswith(".py") else door[3:]
    res = subprocess.run([sys.executable, "-c", PROBE, target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    out = res.stdout.strip().splitlines()
    assert out[-2:] == ["EXIT 0", "HEAVY []"], res.stdout[-2000:] + res.stderr[-2000:]
    assert "usage:" in res.stdout


def test_help_shows_every_default_and_keeps_the_examples_as_written(capsys):
    from trainer.commands.benchmark import build_parser

    text = build_parser().format_help()
    flat = " ".join(text.split())
    assert "(default: 256)" in flat and "(default: fp32)" in flat and "(default: 20)" in flat
    assert "\n    python -m trainer.benchmark --run runs/part3 --runtime onnxruntime --precision int8\n" in text


def test_the_epoch_line_says_small_rates_as_they_are():
    assert [rate(x) for x in (1234.4, 100.0, 87.54, 0.27, 0.0)] == ["1234", "100", "87.5", "0.27", "0"]


@pytest.mark.slow
def test_a_finished_run_is_left_alone_by_resume_auto(toy_dataset, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [*SMALL_VIT, "--dataset", str(toy_dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "10", "--epochs", "1", "--checkpoint-every", "epoch", "--no-progress",
            "--resume-from", "auto"]
    first = main_cls(args)
    stamps = {p: os.path.getmtime(out / p) for p in os.listdir(out) if os.path.isfile(out / p)}
    res = run_here(main_cls, *args, capsys=capsys)  # the job, requeued after it finished
    assert res.returncode == 0 and f"{out} is already complete (1 epochs, eval top1" in res.stdout
    assert "resuming" not in res.stdout
    assert {p: os.path.getmtime(out / p) for p in stamps} == stamps
    assert json.loads((out / "summary.json").read_text())["final"] == first["final"]
    other = run_here(main_cls, *args[:-2], "--lr", "0.5", "--resume-from", "auto", capsys=capsys)
    assert other.returncode == 2 and "other arguments" in other.stderr  # not this run's: refused, not retrained


@pytest.mark.slow
def test_hub_weights_that_cannot_be_had_are_found_before_decoding(toy_dataset, tmp_path):
    res = run_script("train_cls.py", *SMALL_VIT, "--pretrained", "--dataset", str(toy_dataset), "--output-dir",
                     str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
                     env={"HF_HUB_OFFLINE": "1"})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert "could not get pretrained weights for 'vit_tiny_patch16_224'" in lines[0] and "--pretrained-file" in lines[0]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()
