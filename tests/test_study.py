"""The demo study end to end (shrunk): six runs, a report with both plots, and no repeated runs."""
from __future__ import annotations

import json
import os

import pytest

from trainer.commands.study import main as study_main

pytestmark = pytest.mark.slow  # every test here trains for real

RUNS = ["part1_base_scratch", "part2_base_pretrained", "part3_tiny_pretrained", "part4_tiny_distilled",
        "part4_tiny_feature", "part4_tiny_scratch"]


def test_demo_study_writes_a_complete_report_and_continues(tmp_path, cache_dir, capsys):
    out = tmp_path / "demo"
    argv = ["--preset", "demo", "--output-dir", str(out), "--epochs", "1", "--samples-per-class", "8",
            "--standin-epochs", "1", "--standin-per-class", "8", "--cache-dir", str(cache_dir), "--no-progress"]
    study = study_main(argv)
    said = capsys.readouterr().out
    first = said.splitlines()[0]
    assert first.startswith("study: estimated ") and "on this cpu" in first and "--preset demo" not in first
    for run in RUNS:
        assert (out / run / "summary.json").is_file(), run
        assert not (out / run / "checkpoints").exists()  # resumable state is dropped once a run is complete
    assert "STAND-IN" in study["inits"]["part2_base_pretrained"] and study["inits"]["part1_base_scratch"] == "scratch"
    assert set(study["throughput"]) == {"base", "tiny"}
    assert study["throughput"]["tiny"]["images_per_s"] > study["throughput"]["base"]["images_per_s"]
    assert set(study["agreement_with_teacher"]) == {"part3_tiny_pretrained", "part4_tiny_distilled",
                                                    "part4_tiny_feature", "part4_tiny_scratch"}
    for run, kd_type in (("part4_tiny_distilled", "soft"), ("part4_tiny_feature", "feature")):
        distilled = json.loads((out / run / "summary.json").read_text())
        assert distilled["teacher"].endswith("part2_base_pretrained") and distilled["kd_type"] == kd_type
    report = (out / "report.md").read_text()
    for title in ("1. ViT-B from scratch", "2. ViT-B pretrained", "3. ViT-Ti pretrained",
                  "4. ViT-Ti pretrained + teacher", "4f. ViT-Ti pretrained + teacher features", "4'. ViT-Ti from scratch"):
        assert title in report
    assert "Pretraining added" in report and "faster than ViT-B" in report and "The teacher added" in report
    assert "distilling the teacher's pooled features" in report
    assert "STAND-IN" in report and "not ImageNet" in report
    for png in ("curves.png", "tradeoff.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Part 3 as a deployer asks it: ONNX Runtime latency in fp32 and int8, int8's top-1, per-class accuracy.
    for key in ("base", "tiny"):
        thr = study["throughput"][key]
        assert thr["ort_fp32_latency_ms_bs1"] > 0 and thr["ort_int8_latency_ms_bs1"] > 0
        assert thr["onnx_agreement"] >= 0.995 and 0 <= thr["top1_int8"] <= 1
        assert (out / thr["run"] / "model.int8.onnx").is_file()
    assert "## Deployment on a CPU" in report and "int8 ViT-Ti in ONNX Runtime answers in" in report
    # At a phone's budget: ExecuTorch fp32/int8 at 1 and 4 threads beside PyTorch and ONNX Runtime, each file's top-1.
    for key in ("base", "tiny"):
        thr = study["throughput"][key]
        assert set(thr["phone_latency_ms_bs1"]) == {"1", "4"}
        assert all(v > 0 for row in thr["phone_latency_ms_bs1"].values() for v in row.values())
        assert set(thr["phone_latency_ms_bs1"]["1"]) == {"torch_fp32", "ort_fp32", "ort_int8", "et_fp32", "et_int8"}
        assert thr["et_agreement"] >= 0.995 and 0 <= thr["et_int8_top1"] <= 1
        assert (out / thr["run"] / "model.int8.pte").is_file()
    assert "## Deployment at a phone's budget" in report and "| ExecuTorch int8 (XNNPACK) |" in report
    assert "## Per class" in report and "| macro F1 |" in report
    assert all(f"| {k} | " in report for k in range(10))  # a row per digit class

    stamps = {run: os.path.getmtime(out / run / "summary.json") for run in RUNS}
    onnx = {p: os.path.getmtime(p) for run in ("part2_base_pretrained", "part3_tiny_pretrained")
            for p in (out / run / "model.onnx", out / run / "model.int8.onnx", out / run / "model.pte",
                      out / run / "model.int8.pte")}
    (out / "part4_tiny_scratch" / "summary.json").unlink()  # as if the study had been interrupted there
    assert "study: measuring the test-time throughput of part2_base_pretrained" in said  # the silent phase speaks
    again = study_main(argv)
    assert again["sessions"] == 2 and again["study_wall_s"] > study["study_wall_s"]  # the whole study's time
    assert "over 2 sessions" in (out / "report.md").read_text()
    for run in RUNS[:-1]:
        assert os.path.getmtime(out / run / "summary.json") == stamps[run], run
    assert (out / "part4_tiny_scratch" / "summary.json").is_file()
    assert {p: os.path.getmtime(p) for p in onnx} == onnx  # the exports of unchanged weights are not made again
    for key in ("base", "tiny"):
        assert again["throughput"][key]["top1_int8"] == study["throughput"][key]["top1_int8"]


def test_an_export_is_reused_only_while_it_is_newer_than_the_weights(tmp_path):
    from trainer.deploy.export import previous_export

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.safetensors", "model.onnx", "model.int8.onnx"):
        (run / name).write_bytes(b"x")
    assert previous_export(str(run)) is None  # never exported
    (run / "model.onnx.json").write_text(json.dumps({"parity": {"top1_int8": 0.5, "onnx": "/elsewhere/model.onnx"}}))
    assert previous_export(str(run))["onnx"] == str(run / "model.onnx")
    later = os.path.getmtime(run / "model.onnx.json") + 10
    os.utime(run / "model.safetensors", (later, later))  # the run was trained again
    assert previous_export(str(run)) is None
    os.utime(run / "model.onnx.json", (later + 1, later + 1))  # exported again after that
    assert previous_export(str(run)) is not None
    (run / "model.int8.onnx").unlink()
    assert previous_export(str(run)) is None


@pytest.mark.parametrize("weights, words", [("missing.safetensors", "does not exist"),
                                            ("other.safetensors", "does not fit model 'vit_base_patch16_224'")])
def test_a_weight_file_that_cannot_serve_is_refused_before_anything_is_trained(tmp_path, cache_dir, capsys, weights,
                                                                               words):
    from safetensors.torch import save_file

    save_file({"x": __import__("torch").zeros(2)}, str(tmp_path / "other.safetensors"))
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as stop:
        study_main(["--preset", "demo", "--output-dir", str(out), "--cache-dir", str(cache_dir), "--no-progress",
                    "--pretrained-base-file", str(tmp_path / weights)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "--pretrained-base-file" in err[0] and words in err[0], err
    assert not out.exists()  # nothing built, nothing trained


def test_a_part_that_fails_is_reported_and_the_others_run(tmp_path, cache_dir, monkeypatch):
    import sys

    import trainer.study.four_parts as four_parts
    from trainer.errors import UsageError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # nor is the [deploy] extra installed
    monkeypatch.setitem(sys.modules, "executorch", None)  # nor the [mobile] one
    real = four_parts.train_once

    def part2_fails(cfg):
        if cfg.output_dir.endswith("part2_base_pretrained"):
            raise UsageError("the loss became non-finite at step 3")
        return real(cfg)

    monkeypatch.setattr(four_parts, "train_once", part2_fails)
    out = tmp_path / "demo"
    study = study_main(["--preset", "demo", "--output-dir", str(out), "--epochs", "1", "--samples-per-class", "8",
                        "--standin-epochs", "1", "--standin-per-class", "8", "--cache-dir", str(cache_dir),
                        "--no-progress", "--seed", "7"])
    assert not (out / "part2_base_pretrained" / "summary.json").exists()
    assert not (out / "part4_tiny_distilled" / "summary.json").exists()
    notes = " ".join(study["notes"])
    assert "part2_base_pretrained: not run" in notes and "part4_tiny_distilled: not run" in notes
    assert "part4_tiny_feature: not run" in notes
    report = (out / "report.md").read_text()
    assert "## Not run" in report and "non-finite at step 3" in report
    assert "ONNX Runtime figures not measured: ONNX export needs onnxruntime" in report
    assert "ExecuTorch figures not measured: ExecuTorch export needs executorch" in report
    assert "ort_fp32_latency_ms_bs1" not in study["throughput"]["tiny"]
    assert "phone_latency_ms_bs1" not in study["throughput"]["tiny"]
    assert not (out / "part1_base_scratch" / "model.onnx").exists()
    assert (out / "part1_base_scratch" / "summary.json").is_file()
    for run in ("part1_base_scratch", "standin_tiny", "part3_tiny_pretrained"):  # --seed reaches every run
        assert json.loads((out / run / "config.json").read_text())["training_args"]["seed"] == 7


def _fixed_costs(monkeypatch):
    """Step times as a probe would measure them (the demo study test runs the real probe): ViT-B 50 ms a training
    image and 15 ms an eval image, ViT-Ti a tenth of that."""
    import trainer.study.estimate as estimate

    def seconds_per_image(model_name, *args, **kwargs):
        return (0.05, 0.015) if "base" in model_name else (0.005, 0.0015)

    monkeypatch.setattr(estimate, "seconds_per_image", seconds_per_image)


def test_the_hw2_study_without_a_gpu_says_how_long_and_points_to_the_demo(tmp_path, toy_dataset, capsys,
                                                                          monkeypatch):
    _fixed_costs(monkeypatch)
    out = tmp_path / "hw2"
    assert study_main(["--preset", "hw2", "--dataset", str(toy_dataset), "--output-dir", str(out),
                       "--estimate-only"]) == {}
    (line,) = capsys.readouterr().out.strip().splitlines()
    # 2 ViT-B runs of 10,000 images x 5 epochs at 50 ms = 83 min of training alone; the evaluations add more.
    hours = float(line.split("estimated ")[1].split(" h")[0])
    assert 1.5 < hours < 5 and " h on this cpu" in line and "--preset demo" in line
    assert "a training image takes 50 ms (ViT-B) and 5 ms (ViT-Ti)" in line  # what the estimate rests on
    assert not out.exists()  # nothing run, nothing written


def test_the_study_says_the_hub_cannot_give_its_weights_before_anything_runs(tmp_path, toy_dataset):
    from .helpers import run_script

    res = run_script("-m trainer.study", "--preset", "hw2", "--dataset", str(toy_dataset), "--output-dir",
                     str(tmp_path / "hw2"), env={"HF_HUB_OFFLINE": "1"})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert "need ImageNet weights for vit_base_patch16_224" in lines[0] and "--pretrained-base-file" in lines[0]
    assert "--stand-in" in lines[0] and not (tmp_path / "hw2").exists()


def test_a_smoke_study_on_real_data_takes_fewer_eval_images(tmp_path, toy_dataset, monkeypatch):
    import trainer.study.four_parts as four_parts

    seen = []
    monkeypatch.setattr(four_parts, "estimate_line", lambda p, *a, **k: seen.append(p.eval_samples_per_class) or "")
    study_main(["--preset", "hw2", "--dataset", str(toy_dataset), "--estimate-only", "--eval-samples-per-class", "3"])
    assert seen == [3]


def test_an_estimate_needs_no_study_folder(tmp_path, toy_dataset, capsys, monkeypatch):
    _fixed_costs(monkeypatch)
    monkeypatch.setattr("trainer.study.estimate.busy", lambda: (7.5, 2))
    assert study_main(["--preset", "hw2", "--dataset", str(toy_dataset), "--estimate-only"]) == {}
    line = capsys.readouterr().out.strip()
    assert line.startswith("study: estimated ") and "busy while it measured (load 7.5 on 2 cores)" in line


def test_the_estimate_counts_the_work(monkeypatch):
    import torch

    from trainer.study.estimate import study_seconds
    from trainer.study.presets import demo_preset

    _fixed_costs(monkeypatch)
    p = demo_preset("unused")
    p.eval_every = 0
    p.teacher_cache = False
    cpu = torch.device("cpu")
    # 600 training images x 5 epochs: 2 ViT-B runs, 4 ViT-Ti runs, and the teacher's pass per epoch for each of the
    # two distilled ones; 100 eval images after every epoch of every run.
    train = 600 * 5 * (2 * 0.05 + 4 * 0.005) + 2 * 600 * 5 * 0.015
    evals = 100 * 5 * (2 * 0.015 + 4 * 0.0015)
    assert study_seconds(p, cpu, 10, 100, stand_in=False) == pytest.approx(train + evals)
    p.epochs *= 2
    assert study_seconds(p, cpu, 10, 100, stand_in=False) == pytest.approx(2 * (train + evals))
    assert study_seconds(p, cpu, 10, 100, stand_in=True) > 2 * (train + evals)
