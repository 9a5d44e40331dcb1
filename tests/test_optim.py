"""The learning-rate schedule (trainer/training/optim.py)."""
from __future__ import annotations

import pytest

from trainer.training.optim import cosine_with_warmup


def test_schedule_warms_up_then_decays_to_the_floor():
    f = cosine_with_warmup(total_steps=100, warmup_steps=10, min_ratio=0.1)
    warm = [f(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(1 / 11) and f(10) == pytest.approx(1.0)
    decay = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5) and f(100) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def _vit(**kwargs):
    import timm

    return timm.create_model("vit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8, depth=4, **kwargs)


def _group_of(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_layer_decay_scales_every_groups_scheduled_lr():
    """timm puts lr_scale in each group; the schedule must apply it (torch's own schedulers ignore it)."""
    import torch

    from trainer.config import TrainConfig
    from trainer.training.optim import build_optimizer

    model = _vit()
    cfg = TrainConfig(layer_decay=0.5, lr=1e-3, warmup_epochs=0.0, epochs=2)
    optimizer, scheduler = build_optimizer(model, cfg, 10, torch.device("cpu"))
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    factor = cosine_with_warmup(20, 0, 0.0)(3)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(cfg.lr * factor * group["lr_scale"])
    first = _group_of(optimizer, model.blocks[0].attn.qkv.weight)["lr"]
    last = _group_of(optimizer, model.blocks[3].attn.qkv.weight)["lr"]
    head = _group_of(optimizer, model.head.weight)["lr"]
    assert first == pytest.approx(last * 0.5 ** 3) and last == pytest.approx(head * 0.5)


def test_the_optimizer_and_the_regularisers_are_timms():
    import torch

    from trainer.config import TrainConfig
    from trainer.models import create_model
    from trainer.training.optim import build_optimizer
    from trainer.training.setup import model_kwargs

    optimizer, _ = build_optimizer(_vit(), TrainConfig(opt="sgd", momentum=0.8), 10, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.8
    lamb, _ = build_optimizer(_vit(), TrainConfig(opt="lamb", opt_betas=[0.8, 0.99]), 10, torch.device("cpu"))
    assert type(lamb).__name__ == "Lamb" and lamb.param_groups[0]["betas"] == (0.8, 0.99)
    kwargs = model_kwargs(TrainConfig(drop=0.1, drop_path=0.2, model_kwargs={"patch_size": 8, "depth": 2}))
    assert kwargs == {"drop_rate": 0.1, "drop_path_rate": 0.2, "patch_size": 8, "depth": 2}
    model, _ = create_model("vit_tiny_patch16_224", 4, img_size=32, model_kwargs=kwargs)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2) and model.head_drop.p == 0.1
