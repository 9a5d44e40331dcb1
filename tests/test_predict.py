"""trainer.predict classifies image files as trainer.evaluate would (the run's own eval transform, its class names),
and trainer.plot draws one run's curves or several side by side; every run folder holds its curves.png."""
from __future__ import annotations

import json

import datasets
import pytest
import torch
from accelerate import Accelerator

from trainer.commands.plot import main as plot_main
from trainer.commands.predict import main as predict_main
from trainer.commands.train import main_cls
from trainer.data.placement import place_splits
from trainer.evaluation.inference import evaluate_split
from trainer.evaluation.runs import eval_split_for
from trainer.models import load_trained

from .helpers import SMALL_VIT, run_here

pytestmark = pytest.mark.slow


def _train(dataset, out, cache_dir, *extra):
    main_cls([*SMALL_VIT, "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
              "--samples-per-class", "20", "--epochs", "1", "--batch-size", "8", "--no-progress", *extra])
    return out


def _evaluate_preds(run, cache_dir) -> torch.Tensor:
    """What trainer.evaluate's pipeline predicts for every image of the run's eval split (decode cache, store,
    batched crop and resize on the device)."""
    trained = load_trained(str(run))
    split, _ = eval_split_for(trained.config, eval_samples_per_class=None, cache_dir=str(cache_dir))
    place_splits([split], "auto", torch.device("cpu"))
    res = evaluate_split(trained.model, split, trained.config.view, Accelerator(cpu=True), 16, keep_preds=True)
    return res.preds


@pytest.mark.parametrize("kind", ["squares of one size (resized whole)", "photos (timm's resize and centre crop)"])
def test_predict_agrees_with_evaluate_on_the_same_images(kind, toy_dataset, photo_dataset, cache_dir, tmp_path,
                                                         capsys):
    photos = kind.startswith("photos")
    dataset = photo_dataset if photos else toy_dataset
    run = _train(dataset, tmp_path / "run", cache_dir, *(["--samples-per-class", "10"] if photos else []))
    assert json.loads((run / "config.json").read_text())["crop_mode"] == ("center" if photos else "squash")
    test = datasets.load_from_disk(str(dataset))["test"]
    column = "image" if photos else "img"
    folder = tmp_path / "images"
    folder.mkdir()
    for row in range(len(test)):  # the split's own encoded bytes: the same pixels the decode cache holds
        cell = test.cast_column(column, datasets.Image(decode=False))[row][column]
        (folder / f"{row:03d}.{'jpg' if photos else 'png'}").write_bytes(cell["bytes"])
    expected = _evaluate_preds(run, cache_dir)
    res = run_here(predict_main, "--run", str(run), str(folder), "--top-k", "2", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    assert lines[0].startswith("image") and len(lines) == len(test) + 2  # a header, a row per image, the JSON
    got = [p["top"][0]["index"] for p in out["predictions"]]
    assert got == expected.tolist()
    names = json.loads((run / "config.json").read_text())["label_names"]
    assert all(p["top"][0]["label"] == names[p["top"][0]["index"]] and len(p["top"]) == 2 for p in out["predictions"])
    assert all(p["top"][0]["probability"] >= p["top"][1]["probability"] for p in out["predictions"])


def test_bad_predict_input_is_one_line(toy_dataset, cache_dir, tmp_path, capsys):
    run = _train(toy_dataset, tmp_path / "run", cache_dir)
    (tmp_path / "not-an-image.png").write_bytes(b"hello")
    for args, words in (([str(tmp_path / "nowhere.jpg")], "does not exist"),
                        ([str(tmp_path / "not-an-image.png")], "is not an image that decodes"),
                        ([str(tmp_path / "empty")], "does not exist")):
        res = run_here(predict_main, "--run", str(run), *args, capsys=capsys)
        assert res.returncode == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_every_run_draws_its_curves_and_plot_draws_several(toy_dataset, cache_dir, tmp_path, capsys):
    one, two = _train(toy_dataset, tmp_path / "one", cache_dir), _train(toy_dataset, tmp_path / "two", cache_dir,
                                                                        "--lr", "3e-3")
    assert (one / "curves.png").read_bytes()[:4] == b"\x89PNG"
    before = (one / "curves.png").stat().st_mtime_ns
    assert plot_main([str(one)]) == str(one / "curves.png") and (one / "curves.png").stat().st_mtime_ns >= before
    side_by_side = tmp_path / "both.png"
    assert plot_main([str(one), str(two), "--output", str(side_by_side)]) == str(side_by_side)
    assert side_by_side.read_bytes()[:4] == b"\x89PNG"
    res = run_here(plot_main, str(tmp_path), capsys=capsys)
    assert res.returncode == 2 and "holds no metrics.jsonl" in res.stderr


def test_a_run_evaluated_on_a_held_out_part_is_evaluated_again_on_that_part(toy_dataset, cache_dir, tmp_path,
                                                                           capsys):
    from trainer.commands.evaluate import main as evaluate_main

    run = _train(toy_dataset, tmp_path / "run", cache_dir, "--eval-split", "train", "--samples-per-class", "40")
    assert "held out per class by --seed (24 of 240 images)" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    out = evaluate_main(["--run", str(run), "--cache-dir", str(cache_dir)])
    assert out["num_samples"] == summary["num_eval"] == 24 and out["top1"] == pytest.approx(summary["final"]["eval_top1"])
