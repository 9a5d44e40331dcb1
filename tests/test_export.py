"""ONNX export with its parity check, the ONNX Runtime benchmark, and evaluation on other splits."""
from __future__ import annotations

import copy
import json
import os
import sys

import numpy as np
import pytest
import torch

from trainer.commands.benchmark import main as benchmark_main
from trainer.commands.evaluate import main as evaluate_main
from trainer.commands.export import main as export_main


pytest.importorskip("onnxruntime", reason="the [deploy] extra (onnx, onnxruntime, onnxscript) is not installed")
pytestmark = pytest.mark.slow  # trains a model and exports it


def test_export_matches_pytorch_and_the_file_is_usable_alone(small_run, cache_dir, capsys):
    import onnx
    import onnxruntime as ort

    out = export_main(["--run", str(small_run), "--int8", "--cache-dir", str(cache_dir)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == out
    assert printed[-2].startswith(f"exported {small_run} to ") and "agreement" in printed[-2]
    assert out["passed"] and out["num_samples"] == 20 and out["agreement"] >= 0.995
    assert out["top1_onnx"] == out["top1_torch"] and out["max_abs_logit_diff"] < 1e-3
    assert 0 <= out["top1_int8"] <= 1 and out["onnx_int8"] == str(small_run / "model.int8.onnx")
    side = json.loads((small_run / "model.onnx.json").read_text())
    assert side["parity"] == out
    cfg = json.loads((small_run / "config.json").read_text())
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(small_run / "model.onnx")).metadata_props}
    assert meta["mean"] == cfg["mean"] and meta["std"] == cfg["std"] and meta["shape"][-1] == cfg["img_size"]
    assert meta["label_names"] == cfg["label_names"]
    # Usable alone: another batch size than the export's, the same logits as the timm model rebuilt from the run.
    from trainer.models import load_trained

    model = load_trained(str(small_run)).model
    x = torch.randn(5, 3, cfg["img_size"], cfg["img_size"])
    session = ort.InferenceSession(str(small_run / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"pixel_values": x.numpy()})[0]  # the names Hugging Face's ONNX tools use
    with torch.inference_mode():
        assert np.abs(got - model.eval()(x).numpy()).max() < 1e-3


def test_an_export_that_disagrees_exits_1(small_run, cache_dir, tmp_path, monkeypatch, capsys):
    import trainer.deploy.onnx as export

    real = export.export_onnx

    def broken(model, spec, path):  # an exporter that gets the head's bias wrong
        bad = copy.deepcopy(model)
        with torch.no_grad():
            bad.head.bias += torch.tensor([20.0, -20.0, 0.0, 0.0])
        real(bad, spec, path)

    monkeypatch.setattr(export, "export_onnx", broken)
    with pytest.raises(SystemExit) as stop:
        export_main(["--run", str(small_run), "--output", str(tmp_path / "bad.onnx"), "--cache-dir",
                     str(cache_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1 and "disagrees with PyTorch" in err[0]
    assert not json.loads((tmp_path / "bad.onnx.json").read_text())["parity"]["passed"]


def test_without_the_deploy_extra_one_line_says_what_to_install(small_run, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SystemExit) as stop:
        export_main(["--run", str(small_run), "--output", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "pip install 'vit-trainer[deploy]'" in err[0]
    assert not (tmp_path / "m.onnx").exists()


def test_onnxruntime_benchmark_reports_the_keys_of_the_torch_one(capsys):
    common = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=8", "depth=1",
              "--batch-size", "4", "--device", "cpu", "--warmup", "1", "--iters", "2"]
    torch_out = benchmark_main(common)
    for extra in ([], ["--precision", "int8"]):
        ort_out = benchmark_main([*common, "--runtime", "onnxruntime", *extra])
        assert {"cpu_latency_ms_bs1", "images_per_s", "ms_per_batch", "batch_size"} <= ort_out.keys()
        assert ort_out["images_per_s"] > 0 and ort_out["runtime"] == "onnxruntime"
    assert torch_out["runtime"] == "torch"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        benchmark_main([*common, "--precision", "int8"])
    assert stop.value.code == 2 and "--runtime onnxruntime" in capsys.readouterr().err


def test_every_run_and_evaluation_report_per_class_figures(small_run, cache_dir):
    summary = json.loads((small_run / "summary.json").read_text())
    per_class = summary["per_class"]
    assert sum(map(sum, per_class["confusion_matrix"])) == summary["num_eval"] == 20
    assert per_class["support"] == [5, 5, 5, 5] and per_class["label_names"] == [f"class{k}" for k in range(4)]
    assert per_class["accuracy"] == pytest.approx(summary["final"]["eval_top1"])
    out = evaluate_main(["--run", str(small_run), "--cache-dir", str(cache_dir)])
    assert out["per_class"] == per_class  # one metric path: the run's final eval and trainer.evaluate agree


def test_evaluate_takes_the_whole_split_off_the_runs_own_eval_set(small_run, toy_dataset, cache_dir):
    def count(*extra):
        return evaluate_main(["--run", str(small_run), "--cache-dir", str(cache_dir), *extra])["num_samples"]

    assert count() == 20  # the run's own eval images
    assert count("--eval-samples-per-class", "all") == 80  # 'all' overrides the run's choice
    assert count("--eval-split", "train") == 240  # another split: all of it
    assert count("--eval-split", "train", "--eval-samples-per-class", "10") == 40


@pytest.mark.parametrize("extra, message", [
    (["--output", "{tmp}/no/such/folder/m.onnx"], "its folder does not exist"),
    (["--output", "{tmp}"], "is a folder: pass a file path"),
    (["--max-samples", "0"], "--max-samples must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_bad_export_arguments_exit_2_with_one_line(small_run, tmp_path, capsys, extra, message):
    before = sorted(p.name for p in small_run.iterdir())
    with pytest.raises(SystemExit) as stop:
        export_main(["--run", str(small_run), *[a.replace("{tmp}", str(tmp_path)) for a in extra]])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and message in err[0]
    assert sorted(p.name for p in small_run.iterdir()) == before


def test_an_export_to_a_read_only_disk_is_one_line_and_leaves_no_temporary_file(small_run, cache_dir, tmp_path, capsys):
    from .helpers import SmallDisk

    with SmallDisk(tmp_path / "disk", "1m") as disk:
        SmallDisk.resize(SmallDisk(disk, ""), "1m", read_only=True)
        with pytest.raises(SystemExit) as stop:
            export_main(["--run", str(small_run), "--output", str(disk / "m.onnx"), "--cache-dir", str(cache_dir)])
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1 and "is not writable" in err[0], err
        assert os.listdir(disk) == []
