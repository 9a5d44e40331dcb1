"""A run folder leaves the trainer: it loads unchanged in timm's local-dir: loader and in transformers' pipeline with
the run's own predictions, carries a card the Hub's library parses, can be pushed (the dry run and the file selection;
no network here), reports to any tracker accelerate knows, and is the recipe of a run trained again from it."""
from __future__ import annotations

import importlib.util
import json
import sqlite3

import pytest
import torch

from trainer.commands.push import main as push_main
from trainer.commands.train import main_cls
from trainer.deploy.formats import input_spec
from trainer.data.augment import View
from trainer.models import load_trained

from .helpers import SMALL_VIT, run_here

ARGS = ["--samples-per-class", "20", "--epochs", "1", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def run(toy_dataset, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    main_cls([*SMALL_VIT, "--dataset", str(toy_dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
              "--checkpoint-every", "epoch", *ARGS])
    return out


@pytest.mark.slow
def test_timm_local_dir_loads_the_run_with_its_weights_and_labels(run):
    import timm

    model = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
    ours = load_trained(str(run)).model
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), ours(x))
    cfg = json.loads((run / "config.json").read_text())
    assert model.pretrained_cfg["label_names"] == cfg["label_names"] and model.num_classes == cfg["num_classes"]
    assert "num_classes" not in cfg["model_args"] and cfg["model_args"]["img_size"] == 32


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                    reason="transformers is not installed (the dev extra has it)")
def test_transformers_pipeline_predicts_what_the_run_predicts(run, toy_dataset, tmp_path):
    import datasets
    from transformers import pipeline

    from trainer.evaluation.images import classify

    test = datasets.load_from_disk(str(toy_dataset))["test"].cast_column("img", datasets.Image(decode=False))
    files = []
    for row in range(12):
        files.append(tmp_path / f"{row:02d}.png")
        files[-1].write_bytes(test[row]["img"]["bytes"])
    ours = [p.top[0][0] for p in classify(str(run), [str(f) for f in files])]
    classifier = pipeline("image-classification", model=str(run))
    theirs = [classifier(str(f))[0]["label"] for f in files]
    assert theirs == ours


@pytest.mark.slow
def test_the_card_parses_and_its_metrics_are_the_summarys(run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(run / "README.md"))
    summary = json.loads((run / "summary.json").read_text())
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-classification"
    (result,) = card.data.eval_results
    assert result.metric_value == summary["final"]["eval_top1"] and result.dataset_split == "test"
    assert f"on {summary['num_eval']} eval images" in result.metric_name
    assert "20 images per class" in card.text and "![learning curves](curves.png)" in card.text


@pytest.mark.slow
def test_push_dry_run_lists_the_model_files_and_never_checkpoints(run, capsys):
    assert (run / "checkpoints").is_dir() and (run / "eval_predictions.safetensors").is_file()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    res = run_here(push_main, "--run", str(run), "--repo-id", "someone/vit-toy", "--dry-run", capsys=capsys)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out["files"]) == {"model.safetensors", "config.json", "README.md", "summary.json", "metrics.jsonl",
                                 "curves.png"}
    assert out["files"]["model.safetensors"] == (run / "model.safetensors").stat().st_size
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # a dry run writes nothing


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [(["--repo-id", "not a name"], "is not a valid Hub name"),
                                         (["--repo-id", "nameonly"], "names no owner"),
                                         (["--repo-id", "me/x", "--run", "{tmp}"], "has no model.safetensors")])
def test_bad_push_input_is_one_line(run, tmp_path, capsys, args, words):
    argv = ["--run", str(run), *[a.replace("{tmp}", str(tmp_path)) for a in args]]
    res = run_here(push_main, *argv, "--dry-run", capsys=capsys)
    assert res.returncode == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_push_without_a_token_uploads_nothing(run, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    res = run_here(push_main, "--run", str(run), "--repo-id", "me/x", capsys=capsys)
    assert res.returncode == 2 and "no Hugging Face token" in res.stderr
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


@pytest.fixture
def run_copy(run, tmp_path):
    """A copy of the run to change (links planted, labels renamed) without touching the module's run."""
    import shutil

    return shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns("checkpoints"))


@pytest.mark.slow
def test_push_leaves_out_links_and_publishes_no_local_path(run_copy, toy_dataset, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the run\n" * 100)
    (run_copy / "metrics.jsonl").unlink()
    (run_copy / "metrics.jsonl").symlink_to(secret)
    res = run_here(push_main, "--run", str(run_copy), "--repo-id", "someone/vit-toy", "--dry-run", capsys=capsys)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "metrics.jsonl" not in out["files"] and "symbolic link" in out["left_out"]["metrics.jsonl"]
    assert "left out metrics.jsonl (a symbolic link" in res.stdout

    from trainer.deploy.push import published_bytes

    written = published_bytes(str(run_copy), "someone/vit-toy")
    assert set(written) == {"README.md", "config.json", "summary.json"}
    local = str(toy_dataset.parent)  # the dataset's, run's and cache's folders all lie under the test's tmp root
    assert str(toy_dataset) in (run_copy / "config.json").read_text()  # the local record keeps its paths
    for name, data in written.items():
        assert local not in data.decode() and str(tmp_path) not in data.decode(), name
    published = json.loads(written["config.json"])
    assert published["training_args"]["dataset"] == toy_dataset.name and published["architecture"]


@pytest.mark.slow
def test_class_names_are_escaped_in_the_card(run_copy):
    from trainer.model_card import write_card

    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["label_names"] = ["a|b", "line\nbreak", "<img src=x>"] + cfg["label_names"][3:]
    (run_copy / "config.json").write_text(json.dumps(cfg))
    summary = json.loads((run_copy / "summary.json").read_text())
    summary["per_class"]["label_names"] = cfg["label_names"]
    (run_copy / "summary.json").write_text(json.dumps(summary))
    write_card(str(run_copy))
    text = (run_copy / "README.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| class |"))
    assert header.count(" | ") == len(cfg["label_names"]) and "a\\|b" in header
    assert "<img" not in text and "&lt;img src=x&gt;" in text and "line break" in header


@pytest.mark.slow
def test_a_failed_upload_changes_nothing_in_the_run_folder(run_copy, capsys, monkeypatch):
    import huggingface_hub

    sent: list = []

    def refuse(self, repo_id, operations, **kw):
        sent.extend(op.path_in_repo for op in operations)
        raise ConnectionError("the Hub is unreachable")

    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_x")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: f"https://hf.co/{repo_id}")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", refuse)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_copy.rglob("*") if p.is_file()}
    res = run_here(push_main, "--run", str(run_copy), "--repo-id", "me/x", capsys=capsys)
    assert res.returncode == 2 and "the upload to me/x failed" in res.stderr
    assert {"model.safetensors", "README.md", "config.json"} <= set(sent)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_copy.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_run_trained_from_a_run_folders_config_has_its_weights(run, tmp_path, capsys):
    again = tmp_path / "again"
    assert run_here(main_cls, "--config", str(run), "--output-dir", str(again), capsys=capsys).returncode == 0
    assert (again / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    cfg = json.loads((again / "config.json").read_text())["training_args"]
    assert cfg["checkpoint_every"] == "epoch" and cfg["output_dir"] == str(again)  # the flag overrode the file


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trackio") is None, reason="trackio is not installed (the dev extra has it)")
def test_a_local_tracker_stores_what_metrics_jsonl_holds(toy_dataset, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    out = tmp_path / "tracked"
    main_cls([*SMALL_VIT, "--dataset", str(toy_dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
              "--report-to", "trackio,tensorboard", "--log-every", "2", *ARGS])
    rows = sqlite3.connect(tmp_path / "trackio" / "vit-trainer.db").execute("select step, metrics from metrics")
    stored = {}
    for step, metrics in rows:
        for key, value in json.loads(metrics).items():
            stored.setdefault(key, []).append((step, value))
    from trainer.run_files import read_jsonl

    evals = [r for r in read_jsonl(str(out / "metrics.jsonl")) if r["event"] == "eval"]
    trains = [r for r in read_jsonl(str(out / "metrics.jsonl")) if r["event"] == "train"]
    assert stored["eval/top1"] == [(r["step"], pytest.approx(r["top1"])) for r in evals]
    assert stored["train/loss"] == [(r["step"], pytest.approx(r["loss"])) for r in trains]
    assert any(p.name.startswith("events.out.tfevents") for p in out.rglob("*"))  # both trackers, one run


def test_an_unknown_or_missing_tracker_is_one_line(toy_dataset, tmp_path, capsys, monkeypatch):
    base = [*SMALL_VIT, "--dataset", str(toy_dataset), "--output-dir", str(tmp_path / "o"), *ARGS]
    res = run_here(main_cls, *base, "--report-to", "tensorboard,nosuch", capsys=capsys)
    assert res.returncode == 2 and "--report-to nosuch is not a tracker accelerate knows" in res.stderr
    monkeypatch.setattr("accelerate.utils.is_swanlab_available", lambda: False)
    res = run_here(main_cls, *base, "--report-to", "swanlab", capsys=capsys)
    assert res.returncode == 2 and "needs swanlab, which is not installed: pip install swanlab" in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content, words", [("lr: 1e-3\nfoo: 1\n", "names unknown options ['foo']"),
                                            ("lr: [unclosed\n", "does not parse"), ("- a\n- b\n", "is not a mapping")])
def test_a_bad_config_file_is_one_line(toy_dataset, tmp_path, capsys, content, words):
    (tmp_path / "c.yaml").write_text(content)
    res = run_here(main_cls, "--config", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "o"), capsys=capsys)
    assert res.returncode == 2 and words in res.stderr and not (tmp_path / "o").exists()


def test_the_onnx_spec_resizes_as_timm_does():
    spec = input_spec(View(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.9), ["a", "b"], squares=True)
    assert spec["resize"] == 248 and "shorter side to 248" in spec["preprocess"]  # floor(224 / 0.9), not round's 249
    assert spec["input"] == "pixel_values" and spec["crop_mode"] == "center"
    plain = input_spec(View(32, (0.5,) * 3, (0.5,) * 3), ["a", "b"], squares=False)
    assert plain["resize"] == 32 and plain["crop_mode"] == "squash"
