"""The phone runtimes: ExecuTorch (.pte, XNNPACK) and Core ML (.mlpackage) exports with their checks, ExecuTorch's
benchmark at a thread count, and what is refused."""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

from trainer.commands.benchmark import main as benchmark_main
from trainer.commands.export import main as export_main

pytest.importorskip("executorch", reason="the [mobile] extra (executorch, coremltools) is not installed")
pytest.importorskip("coremltools", reason="the [mobile] extra (executorch, coremltools) is not installed")
pytestmark = pytest.mark.slow  # exports a trained model


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_executorch_export_matches_pytorch_and_carries_its_spec(small_run, cache_dir, capsys):
    from executorch.runtime import Runtime

    from trainer.deploy.executorch import stored_spec
    from trainer.models import load_trained

    out = export_main(["--run", str(small_run), "--format", "executorch", "--int8", "--calibration-images", "40",
                       "--cache-dir", str(cache_dir)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == out and "ExecuTorch" in printed[-2]
    assert out["passed"] and out["num_samples"] == 20 and out["agreement"] >= 0.995
    assert out["top1_executorch"] == out["top1_torch"] and out["max_abs_logit_diff"] < 1e-3
    assert 0 <= out["top1_int8"] <= 1 and out["executorch_int8"] == str(small_run / "model.int8.pte")
    # Calibrated on 10 of each class's training images, drawn as the run drew its own (seed, split named).
    cal = out["calibration"]
    assert cal["images"] == 40 and cal["per_class"] == 10 and cal["split"] == "train" and cal["selection_digest"]
    side = json.loads((small_run / "model.pte.json").read_text())
    assert side["parity"] == out and stored_spec(str(small_run / "model.pte")) == side["input"]
    cfg = json.loads((small_run / "config.json").read_text())
    assert side["input"]["label_names"] == cfg["label_names"] and side["input"]["mean"] == cfg["mean"]
    assert (small_run / "model.int8.pte").stat().st_size < (small_run / "model.pte").stat().st_size
    # Usable alone: ExecuTorch's runtime, another batch size than the check's, the logits of the run's timm model.
    model = load_trained(str(small_run)).model.eval()
    x = torch.randn(3, 3, cfg["img_size"], cfg["img_size"])
    got = Runtime.get().load_program(str(small_run / "model.pte")).load_method("forward").execute([x])[0]
    with torch.inference_mode():
        assert (got - model(x)).abs().max() < 1e-3
    assert _leftovers(small_run) == []


def test_coreml_export_is_checked_without_running_and_says_so(small_run, cache_dir, capsys):
    out = export_main(["--run", str(small_run), "--format", "coreml", "--int8", "--cache-dir", str(cache_dir)])
    line = capsys.readouterr().out.strip().splitlines()[-2]
    assert "not run here" in line and "all passed" in line
    assert out["passed"] and out["predictions_run"] is False and "only on macOS" in out["not_run"]
    assert out["top1_coreml"] is None and out["agreement"] is None
    assert all(out["checked"].values()) and set(out["checked"]) >= {"labels", "normalisation", "input_is_rgb_image"}
    assert out["max_abs_input_diff"] < 1e-5 and out["int8_weight_ops"] == 0
    assert all(out["int8_checks"]["checked"].values()) and out["int8_checks"]["int8_weight_ops"] > 0
    spec = json.loads((small_run / "model.mlpackage.json").read_text())["input"]
    assert spec["input"] == "image" and spec["output"] == "classLabel" and spec["shape"] == [1, 3, 32, 32]
    assert (small_run / "model.mlpackage").is_dir() and (small_run / "model.int8.mlpackage").is_dir()
    # Exported again over the packages: replaced whole, nothing left beside them.
    again = export_main(["--run", str(small_run), "--format", "coreml", "--cache-dir", str(cache_dir)])
    assert again["passed"] and _leftovers(small_run) == []


def test_a_coreml_package_with_the_wrong_normalisation_fails_its_check(small_run, cache_dir, tmp_path, monkeypatch,
                                                                       capsys):
    import trainer.deploy.coreml as coreml

    real = coreml.image_scaling  # a converter that forgets the mean: the check computes it from the spec's mean/std
    monkeypatch.setattr(coreml, "image_scaling", lambda mean, std: (real(mean, std)[0], [0.0, 0.0, 0.0], False))
    with pytest.raises(SystemExit) as stop:
        export_main(["--run", str(small_run), "--format", "coreml", "--output", str(tmp_path / "bad.mlpackage"),
                     "--cache-dir", str(cache_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and err == ["export failed: the Core ML file failed its checks: normalisation"]
    assert json.loads((tmp_path / "bad.mlpackage.json").read_text())["parity"]["max_abs_input_diff"] > 0.5


def test_executorch_benchmark_runs_at_the_threads_asked(capsys):
    common = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=8", "depth=1",
              "--batch-size", "4", "--device", "cpu", "--warmup", "1", "--iters", "2", "--threads", "1"]
    threads = torch.get_num_threads()
    for extra in ([], ["--precision", "int8"]):
        out = benchmark_main([*common, "--runtime", "executorch", *extra])
        assert torch.get_num_threads() == threads  # a run after it computes as it would have
        assert {"cpu_latency_ms_bs1", "images_per_s", "ms_per_batch", "batch_size"} <= out.keys()
        assert out["images_per_s"] > 0 and out["runtime"] == "executorch" and out["threads"] == 1
    assert "(executorch, int8, 1 threads)" in capsys.readouterr().out


def test_without_the_mobile_extra_one_line_says_what_to_install(small_run, monkeypatch, capsys, tmp_path):
    for module, fmt in (("executorch", "executorch"), ("coremltools", "coreml")):
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(SystemExit) as stop:
            export_main(["--run", str(small_run), "--format", fmt, "--output", str(tmp_path / "m")])
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1 and "pip install 'vit-trainer[mobile]'" in err[0], err
        assert list(tmp_path.iterdir()) == []


class _DataDependent(torch.nn.Module):
    """A forward that branches on the values it is given: torch.export cannot trace it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) if x.sum() > 0 else -self.model(x)


def test_a_model_that_does_not_trace_is_one_line_and_leaves_no_file(small_run, cache_dir, monkeypatch, capsys,
                                                                    tmp_path):
    import trainer.deploy.export as export

    real = export.load_trained
    monkeypatch.setattr(export, "load_trained", lambda run, what: dataclasses.replace(
        real(run, what), model=_DataDependent(real(run, what).model)))
    with pytest.raises(SystemExit) as stop:
        export_main(["--run", str(small_run), "--format", "executorch", "--output", str(tmp_path / "m.pte"),
                     "--cache-dir", str(cache_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "cannot be traced by torch.export" in err[0], err
    assert "--format onnx" in err[0] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    (["--format", "tflite"], "invalid choice: 'tflite'"),
    (["--format", "executorch", "--calibration-images", "0"], "--calibration-images must be at least 1"),
    (["--format", "coreml", "--run", "{tmp}"], "has no model.safetensors"),
])
def test_bad_mobile_export_arguments_exit_2_with_one_line(small_run, tmp_path, capsys, extra, message):
    before = sorted(p.name for p in small_run.iterdir())
    with pytest.raises(SystemExit) as stop:
        export_main(["--run", str(small_run), *[a.replace("{tmp}", str(tmp_path)) for a in extra]])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in small_run.iterdir()) == before


def test_the_pte_runner_takes_batches_larger_than_the_program_in_chunks(small_run, tmp_path):
    from trainer.deploy.executorch import EXECUTORCH, MAX_BATCH
    from trainer.deploy.formats import input_spec
    from trainer.models import load_trained

    trained = load_trained(str(small_run))
    path = str(tmp_path / "m.pte")
    EXECUTORCH.write(trained.model, EXECUTORCH.spec_for(input_spec(trained.config.view, ["a"] * 4)), path)
    x = np.random.default_rng(0).standard_normal((MAX_BATCH + 3, 3, 32, 32), dtype=np.float32)
    got = EXECUTORCH.runner(path)(x)
    with torch.inference_mode():
        assert got.shape == (MAX_BATCH + 3, 4) and np.abs(got - trained.model(torch.from_numpy(x)).numpy()).max() < 1e-3
