"""Random erasing (trainer/data/erasing.py): boxes drawn as timm's RandomErasing draws them, filled only inside,
with noise that is a function of the image and not of the batch it falls in."""
from __future__ import annotations

import random

import pytest
import torch

from trainer.data.erasing import EraseDraws, Erasing, draw_erasing, erase, noise_keys, pixel_noise


def _draws(n: int, e: Erasing, seed: int = 0) -> EraseDraws:
    return draw_erasing(n, e, noise_keys(torch.arange(n), 42, 0), torch.Generator().manual_seed(seed))


def _erased_share(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] != 1).float().mean(dim=(1, 2))


@pytest.mark.parametrize("count", [1, 3])
def test_the_erased_area_is_distributed_as_timms(count):
    from timm.data.random_erasing import RandomErasing

    n, side = 3000, 32
    random.seed(0)
    ref = RandomErasing(probability=0.6, mode="const", max_count=count, device="cpu")(torch.ones(n, 3, side, side))
    ours = erase(torch.ones(n, 3, side, side), _draws(n, Erasing(0.6, "const", count, side)))
    a, b = _erased_share(ref), _erased_share(ours)
    assert abs(float((a > 0).float().mean()) - float((b > 0).float().mean())) < 0.03  # images erased
    assert float(a[a > 0].mean()) == pytest.approx(float(b[b > 0].mean()), rel=0.06)  # area of those erased
    assert float(a.max()) <= 1 / 3 + 0.05 and float(b.max()) <= 1 / 3 + 0.05


def test_boxes_fit_and_only_their_pixels_change():
    e = Erasing(1.0, "rand", 2, 16)
    d = _draws(200, e)
    top, left, h, w = d.boxes.unbind(-1)
    assert bool(d.used.any(1).all())  # probability 1: every image keeps at least one box
    assert bool(((top + h <= 16) & (left + w <= 16) & (h < 16) & (w < 16))[d.used].all())
    x = torch.randn(200, 3, 16, 16)
    out = erase(x.clone(), d)
    for i in range(0, 200, 17):
        inside = torch.zeros(16, 16, dtype=torch.bool)
        for k in range(2):
            if d.used[i, k]:
                t, l_, hh, ww = d.boxes[i, k].tolist()
                inside[t:t + hh, l_:l_ + ww] = True
                assert torch.equal(out[i, :, t, l_], d.colour[i, k]) or bool(d.used[i, k + 1:].any())
        assert torch.equal(out[i][:, ~inside], x[i][:, ~inside])


def test_pixel_noise_is_a_function_of_the_image_not_the_batch():
    keys = noise_keys(torch.tensor([5, 9, 2, 7]), 42, 1)
    a = pixel_noise(keys, (3, 8, 8))
    b = pixel_noise(keys.flip(0), (3, 8, 8))
    assert torch.equal(a.flip(0), b)  # another batch layout, the same noise per image
    assert not torch.equal(a, pixel_noise(noise_keys(torch.tensor([5, 9, 2, 7]), 42, 2), (3, 8, 8)))  # another epoch
    big = pixel_noise(noise_keys(torch.arange(64), 0, 0), (3, 32, 32))
    assert abs(float(big.mean())) < 0.02 and float(big.std()) == pytest.approx(1.0, abs=0.02)


def test_boxes_follow_a_teachers_input_size():
    d = _draws(8, Erasing(1.0, "const", 1, 16))
    x = torch.ones(8, 3, 32, 32)
    out = erase(x, d)
    for i in range(8):
        t, l_, h, w = (2 * d.boxes[i, 0]).tolist()
        assert bool((out[i, :, t:t + h, l_:l_ + w] == 0).all())
