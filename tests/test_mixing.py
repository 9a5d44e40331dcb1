"""Mixup and CutMix (trainer/data/mixing.py) against timm's own Mixup, given the same draws: the mixed batch and the
soft targets, in every mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data.mixup import Mixup

from trainer.data.mixing import MixSettings, draw_mix, mix, mix_generator, mixed_targets, soft_cross_entropy

KINDS = {"mixup": dict(mixup_alpha=0.8), "cutmix": dict(cutmix_alpha=1.0),
         "both": dict(mixup_alpha=0.8, cutmix_alpha=1.0), "minmax": dict(cutmix_alpha=1.0, cutmix_minmax=(0.2, 0.8)),
         "sometimes": dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5, switch_prob=0.3)}


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_the_mixed_batch_and_targets_are_timms(mode, kind):
    settings = MixSettings(mode=mode, **KINDS[kind])
    for seed in range(6):  # several draws: mixed and unmixed images, boxes clipped at the borders and not
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 5, (8,), generator=gen)
        np.random.seed(1000 + seed)
        timm_mix = Mixup(mixup_alpha=settings.mixup_alpha, cutmix_alpha=settings.cutmix_alpha,
                         cutmix_minmax=settings.cutmix_minmax, prob=settings.prob, switch_prob=settings.switch_prob,
                         mode=mode, label_smoothing=0.1, num_classes=5)
        ref_x, ref_t = timm_mix(x.clone(), y)
        draws = draw_mix(np.random.RandomState(1000 + seed), 8, 16, settings)
        assert torch.allclose(mix(x, draws), ref_x, atol=1e-6)
        assert torch.allclose(mixed_targets(y, 5, draws, 0.1), ref_t, atol=1e-6)


def test_boxes_follow_another_input_size_and_the_draws_are_a_function_of_their_place():
    settings = MixSettings(cutmix_alpha=1.0, mode="elem")
    a = draw_mix(mix_generator(42, 3, 7, 0), 6, 16, settings)
    b = draw_mix(mix_generator(42, 3, 7, 0), 6, 16, settings)
    c = draw_mix(mix_generator(42, 3, 8, 0), 6, 16, settings)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.lam, b.lam) and not np.array_equal(a.lam, c.lam)
    x = torch.arange(6 * 3 * 32 * 32, dtype=torch.float32).view(6, 3, 32, 32)
    big = mix(x, a)  # the same boxes at twice the size
    for i in np.flatnonzero(a.cut):
        yl, yh, xl, xh = (2 * a.boxes[i]).tolist()
        assert torch.equal(big[i, :, yl:yh, xl:xh], x[5 - i, :, yl:yh, xl:xh])


def test_soft_cross_entropy_is_plain_cross_entropy_on_one_hot_targets():
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert torch.allclose(soft_cross_entropy(logits, torch.nn.functional.one_hot(y, 3).float()),
                          torch.nn.functional.cross_entropy(logits, y))
