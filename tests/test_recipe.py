"""The fine-tuner's toolbox: every ingredient reaches the run, is reported, and resumes exactly."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from trainer.commands.evaluate import main as evaluate_main
from trainer.commands.train import main_cls
from trainer.run_files import read_jsonl

from .helpers import ROOT, SMALL_VIT, assert_same_run, run_here

pytestmark = pytest.mark.slow


def _args(dataset, out, cache_dir, *extra):
    return [*SMALL_VIT, "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "20", "--batch-size", "8", "--epochs", "2", "--lr", "2e-3", "--no-progress", *extra]


def test_the_ema_is_evaluated_beside_the_model_saved_loadable_and_resumed_exactly(toy_dataset, cache_dir, tmp_path,
                                                                                  capsys):
    full = tmp_path / "full"
    args = ["--model-ema", "--model-ema-warmup", "--checkpoint-every", "5", "--keep-checkpoints", "10"]
    summary = main_cls(_args(toy_dataset, full, cache_dir, *args))
    evals = [r for r in read_jsonl(str(full / "metrics.jsonl")) if r["event"] == "eval"]
    assert all("ema_top1" in r and "ema_loss" in r for r in evals) and len(evals) == 2
    assert summary["final"]["ema_top1"] == evals[-1]["ema_top1"]
    ema, live = load_file(str(full / "model_ema.safetensors")), load_file(str(full / "model.safetensors"))
    assert ema.keys() == live.keys() and any(not torch.equal(ema[k], live[k]) for k in ema)  # an average, not a copy
    out = evaluate_main(["--run", str(full / "model_ema.safetensors"), "--cache-dir", str(cache_dir)])
    assert out["top1"] == pytest.approx(summary["final"]["ema_top1"]) and out["loss"] == pytest.approx(
        summary["final"]["ema_loss"], rel=1e-5)
    # Cut off after step 10 of 20: the average continues from the checkpoint as if nothing had happened.
    cut = tmp_path / "cut"
    _cut_after_step_10(full, cut)
    res = run_here(main_cls, *_args(toy_dataset, cut, cache_dir, *args, "--resume-from", "auto"), capsys=capsys)
    assert res.returncode == 0 and "resuming from" in res.stdout and "step 10" in res.stdout, res.stderr[-2000:]
    assert_same_run(full, cut)
    assert load_file(str(cut / "model_ema.safetensors")).keys() == ema.keys()
    assert all(torch.equal(load_file(str(cut / "model_ema.safetensors"))[k], ema[k]) for k in ema)


def test_an_ema_longer_than_the_run_is_said(toy_dataset, cache_dir, tmp_path, capsys):
    res = run_here(main_cls, *_args(toy_dataset, tmp_path / "o", cache_dir, "--model-ema", "--epochs", "1"),
                   capsys=capsys)
    assert res.returncode == 0 and "remembers about 5000 steps, more than this run's 10" in res.stderr
    assert "--model-ema-warmup" in res.stderr


def test_ema_decay_out_of_range_is_one_line(toy_dataset, tmp_path, capsys):
    res = run_here(main_cls, *_args(toy_dataset, tmp_path / "o", tmp_path / "c", "--model-ema", "--model-ema-decay",
                                    "1"), capsys=capsys)
    assert res.returncode == 2 and "--model-ema-decay must be in [0, 1), got 1.0" in res.stderr
    assert not (tmp_path / "o").exists()


def _cut_after_step_10(full, cut):
    shutil.copytree(full, cut)
    for name in ("model.safetensors", "config.json", "summary.json", "README.md", "model_ema.safetensors"):
        if (cut / name).exists():
            (cut / name).unlink()
    for step in (15, 20):
        shutil.rmtree(cut / "checkpoints" / f"step-{step}")


EVERY_FLAG = ["--mixup", "0.8", "--cutmix", "1.0", "--mixup-mode", "elem", "--smoothing", "0.1",
              "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--recount", "2", "--random-crop", "2",
              "--model-ema", "--model-ema-warmup", "--layer-decay", "0.75", "--drop-path", "0.1", "--drop", "0.1",
              "--opt", "lamb"]


def test_a_run_with_every_recipe_flag_learns_and_a_sigkill_resumes_it_to_the_same_weights(toy_dataset, cache_dir,
                                                                                           tmp_path, capsys):
    args = [*EVERY_FLAG, "--checkpoint-every", "5", "--keep-checkpoints", "10"]
    full = tmp_path / "full"
    main_cls(_args(toy_dataset, full, cache_dir, *args))
    trains = [r["loss"] for r in read_jsonl(str(full / "metrics.jsonl")) if r["event"] == "train"]
    assert trains[-1] < trains[0]  # the augmented, mixed, soft targets still teach
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_cls.py"), *_args(toy_dataset, killed, cache_dir, *args)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts, deadline = killed / "checkpoints", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name == "step-10" for p in ckpts.iterdir()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    res = run_here(main_cls, *_args(toy_dataset, killed, cache_dir, *args, "--resume-from", "auto"), capsys=capsys)
    assert res.returncode == 0 and "resuming from" in res.stdout, res.stderr[-2000:]
    # Every draw (mixing, ops, magnitudes, erased boxes and their noise) came from the plan, not a generator's state.
    assert_same_run(full, killed)
    a, b = load_file(str(full / "model_ema.safetensors")), load_file(str(killed / "model_ema.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


def test_mixing_off_epoch_and_the_teacher_sees_the_mixed_batch(toy_dataset, cache_dir, tmp_path):
    from trainer.config import TrainConfig
    from trainer.data.mixing import MixSettings

    cfg = TrainConfig(mixup=0.8, mixup_off_epoch=2)
    assert MixSettings.of(cfg, 1) is not None and MixSettings.of(cfg, 2) is None
    teacher = tmp_path / "teacher"
    main_cls(_args(toy_dataset, teacher, cache_dir, "--epochs", "1"))
    from trainer.commands.train import main_kd

    summary = main_kd([*_args(toy_dataset, tmp_path / "kd", cache_dir, "--epochs", "1", "--mixup", "0.8", "--cutmix",
                              "1.0"), "--teacher", str(teacher)])
    assert summary["teacher_agreement"] is not None and summary["final"]["train_loss_kd"] > 0


def test_a_recipe_expands_into_ordinary_flags_that_given_flags_override(tmp_path):
    from trainer.recipes import RECIPES
    from trainer.train_args import parse_args

    cfg = parse_args(["--recipe", "deit", "--output-dir", str(tmp_path / "a")])
    for key, value in RECIPES["deit"].values.items():
        assert getattr(cfg, key) == value, key
    assert cfg.recipe == "deit" and cfg.to_dict()["recipe"] == "deit"  # what config.json stores
    mine = parse_args(["--recipe", "deit", "--mixup", "0.2", "--no-random-resized-crop", "--output-dir",
                       str(tmp_path / "b")])
    assert mine.mixup == 0.2 and mine.random_resized_crop is False and mine.cutmix == 1.0
    yaml = tmp_path / "base.yaml"
    yaml.write_text("lr: 0.02\nopt: lamb\n")
    both = parse_args(["--config", str(yaml), "--recipe", "finetune", "--output-dir", str(tmp_path / "c")])
    assert both.opt == "sgd" and both.lr == RECIPES["finetune"].values["lr"]  # the preset over the file's defaults


def test_the_start_line_says_what_the_recipe_set_and_what_a_flag_replaced(toy_dataset, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    main_cls(_args(toy_dataset, out, cache_dir, "--recipe", "deit", "--mixup", "0.5", "--epochs", "1"))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("recipe deit"))
    assert "--aa rand-m9-mstd0.5-inc1" in line and "Touvron" in line and "replaced here: --mixup 0.5" in line
    import json

    assert json.loads((out / "config.json").read_text())["training_args"]["recipe"] == "deit"
