"""train_cls.py end to end on small data: learning, files, reload through timm, determinism."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from trainer.commands.train import main_cls
from trainer.run_files import read_jsonl

from .helpers import CIFAR10, SMALL_VIT, needs_cifar10

pytestmark = pytest.mark.slow  # every test here trains for real


def _args(dataset, out, cache_dir, *extra):
    return [*SMALL_VIT, "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "40", "--batch-size", "16", "--lr", "2e-3", "--warmup-epochs", "0.2",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def trained(toy_dataset, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "cls"
    summary = main_cls(_args(toy_dataset, out, cache_dir, "--epochs", "4", "--eval-every", "7", "--log-every", "5"))
    return out, summary


def test_run_lowers_the_loss_and_writes_all_files(trained):
    out, summary = trained
    for name in ("model.safetensors", "config.json", "summary.json", "metrics.jsonl", "eval_predictions.safetensors"):
        assert (out / name).is_file(), name
    preds = load_file(str(out / "eval_predictions.safetensors"))["preds"]
    assert preds.shape == (summary["num_eval"],)
    records = read_jsonl(str(out / "metrics.jsonl"))
    for r in records:
        assert {"event", "epoch", "step", "loss", "top1", "images_per_s"} <= set(r)
        assert 0.0 <= r["top1"] <= 1.0
    train = [r for r in records if r["event"] == "train"]
    evals = [r for r in records if r["event"] == "eval"]
    steps_per_epoch = 10  # 160 images / batch 16
    assert [r["step"] for r in evals] == [7, 10, 14, 20, 21, 28, 30, 35, 40]
    assert {r["step"] for r in train} >= {5, 7, 10, 15, 40}
    assert evals[-1]["epoch"] == 4.0 and evals[-1]["step"] == 4 * steps_per_epoch
    assert train[-1]["loss"] < 0.7 * train[0]["loss"]
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert evals[-1]["top1"] >= 0.6  # 4 learnable classes: chance is 0.25
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["final"]["eval_top1"] == evals[-1]["top1"]
    assert saved["best_eval_top1"] == max(r["top1"] for r in evals)
    assert saved["num_train"] == 160 and saved["num_eval"] == 80 and saved["pretrained"] is False
    for key in ("model", "num_params", "epochs", "train_time_s", "train_images_per_s"):
        assert key in saved


def test_checkpoint_reloads_through_timm_to_the_same_logits(trained):
    out, summary = trained
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_classes"] == 4
    assert config["label_names"] == ["class0", "class1", "class2", "class3"]
    assert config["model_kwargs"] == {"patch_size": 8, "depth": 2} and config["img_size"] == 32
    assert config["mean"] == [0.5, 0.5, 0.5] and config["training_args"]["lr"] == 2e-3
    rebuilt = timm.create_model(
        config["architecture"], pretrained=True, num_classes=config["num_classes"], img_size=config["img_size"],
        **config["model_kwargs"],
        pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"), num_classes=config["num_classes"]))
    reference = timm.create_model(config["architecture"], num_classes=4, img_size=32, **config["model_kwargs"])
    reference.load_state_dict(load_file(str(out / "model.safetensors")))
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), reference.eval()(x), atol=1e-6)


def test_same_seed_same_weights(toy_dataset, cache_dir, tmp_path):
    weights = []
    for name in ("a", "b"):
        main_cls(_args(toy_dataset, tmp_path / name, cache_dir, "--epochs", "1", "--samples-per-class", "20",
                       "--random-crop", "4"))
        weights.append(load_file(str(tmp_path / name / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    main_cls(_args(toy_dataset, tmp_path / "c", cache_dir, "--epochs", "1", "--samples-per-class", "20",
                   "--random-crop", "4", "--seed", "7"))
    other = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert not torch.equal(other["head.weight"], weights[0]["head.weight"])


def test_grad_accum_counts_optimizer_steps(toy_dataset, cache_dir, tmp_path):
    summary = main_cls(_args(toy_dataset, tmp_path / "acc", cache_dir, "--epochs", "1", "--batch-size", "8",
                             "--grad-accum", "3"))
    assert summary["steps"] == 7  # 20 micro-batches of 8, in groups of 3: 6 full and 1 of 2


def test_pretrained_file_fine_tunes(toy_dataset, cache_dir, tmp_path, capsys):
    from safetensors.torch import save_file

    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000, img_size=32, patch_size=8, depth=2)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "in1k.safetensors"))
    summary = main_cls(_args(toy_dataset, tmp_path / "ft", cache_dir, "--epochs", "1",
                             "--pretrained-file", str(tmp_path / "in1k.safetensors")))
    assert "head: Linear(192->1000) replaced by Linear(192->4)" in capsys.readouterr().out
    assert summary["pretrained"] is True and summary["init"].startswith("file:")


@needs_cifar10
def test_real_cifar10_short_run(cache_dir, tmp_path):
    summary = main_cls([*SMALL_VIT, "--dataset", str(CIFAR10), "--output-dir", str(tmp_path / "c10"),
                        "--cache-dir", str(cache_dir), "--samples-per-class", "30", "--eval-samples-per-class", "10",
                        "--epochs", "1", "--batch-size", "32", "--lr", "1e-3", "--no-progress"])
    assert summary["num_train"] == 300 and summary["num_eval"] == 100
    config = json.loads((tmp_path / "c10" / "config.json").read_text())
    assert config["label_names"][0] == "airplane" and config["num_classes"] == 10
    assert 0.0 <= summary["final"]["eval_top1"] <= 1.0


def test_other_columns_and_validation_split_through_the_cli(tmp_path, cache_dir, capsys):
    from .helpers import make_dataset, run_here

    data = make_dataset(tmp_path / "beans", {"train": 20, "validation": 5}, num_classes=3, image_column="image",
                        label_column="labels")
    out = tmp_path / "run"
    res = run_here(main_cls, *SMALL_VIT, "--dataset", str(data), "--eval-split", "validation", "--samples-per-class",
                   "20", "--epochs", "1", "--batch-size", "16", "--output-dir", str(out), "--cache-dir", str(cache_dir),
                   "--no-progress", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert summary["num_train"] == 60 and summary["num_eval"] == 15
    assert config["num_classes"] == 3 and config["training_args"]["eval_split"] == "validation"


def test_tensorboard_tracker_gets_the_same_scalars(toy_dataset, cache_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    main_cls(_args(toy_dataset, out, cache_dir, "--epochs", "2", "--report-to", "tensorboard"))
    events = [str(p.parent) for p in out.rglob("events.out.tfevents.*")]
    scalars = {}
    for folder in events:
        acc = EventAccumulator(folder)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [e.value for e in acc.Scalars(tag)]
    evals = [r for r in read_jsonl(str(out / "metrics.jsonl")) if r["event"] == "eval"]
    assert scalars["eval/top1"] == pytest.approx([r["top1"] for r in evals])
    assert "train/loss" in scalars


def test_compiled_run_keeps_no_eval_predictions(toy_dataset, cache_dir, tmp_path, monkeypatch):
    """A teacher is evaluated eagerly, so a compiled run's predictions must not stand in for it."""
    monkeypatch.setattr(torch, "compile", lambda model: model)  # the flag's bookkeeping, without inductor's minutes
    out = tmp_path / "c"
    main_cls(_args(toy_dataset, out, cache_dir, "--epochs", "1", "--compile"))
    assert (out / "model.safetensors").is_file() and not (out / "eval_predictions.safetensors").exists()


def test_the_store_never_changes_the_numbers(toy_dataset, cache_dir, tmp_path):
    """The same arguments and seed end with the same weights and metric lines whichever store served the data."""
    weights, records = {}, {}
    for data_on in ("device", "host", "disk"):
        out = tmp_path / data_on
        main_cls(_args(toy_dataset, out, cache_dir, "--epochs", "2", "--samples-per-class", "20", "--random-crop", "4",
                       "--eval-every", "3", "--data-on", data_on))
        weights[data_on] = load_file(str(out / "model.safetensors"))
        records[data_on] = [{k: v for k, v in r.items() if k != "images_per_s"}
                            for r in read_jsonl(str(out / "metrics.jsonl"))]
    for data_on in ("host", "disk"):
        assert all(torch.equal(weights["device"][k], weights[data_on][k]) for k in weights["device"]), data_on
        assert records[data_on] == records["device"], data_on
