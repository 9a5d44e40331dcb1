"""What a run folder's config.json and summary.json hold (trainer/run_records.py): typed records that write the keys
earlier versions wrote, and read folders those versions left."""
from __future__ import annotations

import json

import pytest
import timm
import torch

from trainer.config import TrainConfig
from trainer.data.augment import View
from trainer.errors import UsageError
from trainer.models import load_trained
from trainer.run_files import save_state_dict
from trainer.run_records import RunConfig, RunSummary

from .helpers import SMALL_VIT_KWARGS

VIEW = View(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.9)


def test_config_json_round_trips_with_the_keys_every_version_wrote():
    cfg = TrainConfig(model="vit_tiny_patch16_224", img_size=32, model_kwargs=dict(SMALL_VIT_KWARGS), seed=7)
    record = RunConfig.of_training(cfg, ["a", "b"], VIEW, {"distillation": {"teacher": "runs/t", "kd_alpha": 0.5}})
    text = json.loads(json.dumps(record.to_json()))
    assert list(text)[:10] == ["architecture", "num_classes", "label_names", "model_kwargs", "img_size", "mean", "std",
                               "interpolation", "crop_pct", "training_args"]
    assert text["training_args"] == cfg.to_dict() and text["distillation"]["kd_alpha"] == 0.5
    back = RunConfig.from_json(text)
    assert back == record and back.view == VIEW and back.training.seed == 7 and back.distillation == {
        "teacher": "runs/t", "kd_alpha": 0.5}


def test_an_older_folder_without_training_args_or_label_names_still_loads(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32, **SMALL_VIT_KWARGS).eval()
    save_state_dict(model.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "vit_tiny_patch16_224", "num_classes": 3, "img_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3,
        "model_kwargs": SMALL_VIT_KWARGS, "an_unknown_key": 1}))
    trained = load_trained(str(tmp_path))
    assert trained.config.class_names == ["0", "1", "2"] and trained.config.training == TrainConfig()
    assert trained.config.view == View(32, (0.5,) * 3, (0.5,) * 3) and trained.config.task == {"an_unknown_key": 1}
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(trained.model(x), model(x), atol=1e-6)


@pytest.mark.parametrize("content, words", [("{not json", "is not valid JSON"), ("[1, 2]", "is not a JSON object"),
                                            ('{"architecture": "vit_tiny_patch16_224"}', "lacks")])
def test_a_damaged_config_is_one_line(tmp_path, content, words):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(UsageError, match=words):
        RunConfig.read(str(tmp_path / "config.json"), "--run")


def test_summary_json_keeps_the_tasks_keys_at_the_top_level():
    values = {"model": "m", "pretrained": False, "init": "scratch", "num_params": 5, "epochs": 1, "steps": 2,
              "num_train": 8, "num_eval": 4, "processes": 1, "device": "cpu", "mixed_precision": "no",
              "train_time_s": 1.5, "train_images_per_s": 5.3, "best_eval_top1": 0.5,
              "final": {"eval_top1": 0.5, "eval_loss": 1.0}, "teacher_agreement": 0.75, "resume_key": "k",
              "per_class": {"accuracy": 0.5}}
    summary = RunSummary.from_json(values)
    assert summary.task == {"teacher_agreement": 0.75, "resume_key": "k"} and summary.eval_top1 == 0.5
    assert summary.to_json() == values and list(summary.to_json()) == list(values)
