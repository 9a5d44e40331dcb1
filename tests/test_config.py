"""The declared options (trainer/config.py): one command-line flag each, typed once, checked the same in Python."""
from __future__ import annotations

import dataclasses
import re

import pytest

from trainer.config import TrainConfig, validate
from trainer.train_args import build_parser, parse_args
from trainer.errors import UsageError


def test_every_option_is_on_the_command_line_once():
    kd_flags = {a.dest for a in build_parser(kd=True)._actions if a.dest not in ("help", "config")}
    cls_flags = {a.dest for a in build_parser()._actions if a.dest not in ("help", "config")}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert kd_flags == fields
    assert fields - cls_flags == {"teacher", "kd_type", "kd_token_target", "kd_alpha", "kd_temperature", "teacher_cache",
                                  "teacher_cache_dir"}
    assert parse_args([]) == TrainConfig()


def test_typed_values_are_parsed_once():
    cfg = parse_args(["--checkpoint-every", "200", "--samples-per-class", "all", "--clip-grad", "0", "--no-flip",
                      "--model-kwargs", "patch_size=4", "drop_rate=0.1", "global_pool=avg", "--img-size", "32"])
    assert cfg.checkpoint_every == 200 and cfg.samples_per_class is None and cfg.clip_grad is None
    assert cfg.flip is False and cfg.img_size == 32
    assert cfg.model_kwargs == {"patch_size": 4, "drop_rate": 0.1, "global_pool": "avg"}
    assert parse_args(["--checkpoint-every", "epoch"]).checkpoint_every == "epoch"
    assert parse_args(["--smoothing", "0.1"]).label_smoothing == 0.1  # timm's train.py name works too


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "--epochs must be at least 1, got 0"),
    ({"lr": 12.0}, "--lr must be in (0, 10), got 12.0"),
    ({"checkpoint_every": 0}, "--checkpoint-every must be a positive step count or 'epoch'"),
    ({"mixed_precision": "fp8"}, "--mixed-precision must be one of ['no', 'fp16', 'bf16']"),
    ({"kd_alpha": 2.0}, "--kd-alpha must be in [0, 1]"),
    ({"pretrained": True, "pretrained_file": "w.safetensors"}, "exclude each other"),
])
def test_configs_built_in_python_are_checked_like_the_command_line(changes, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        validate(dataclasses.replace(TrainConfig(), **changes))
