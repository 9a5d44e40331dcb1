"""--aa (trainer/augment_policy.py, trainer/data/policies.py, trainer/data/image_ops.py): every RandAugment op against
timm's own PIL op, every TrivialAugment op against torchvision's, on the same image and magnitude; the policy strings
as timm parses them; a batch grouped by op equals each image on its own; the draws are the plan's."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trainer.augment_policy import _RAND_INCREASING_OPS, _RAND_OPS, _TRIVIAL_OPS, parse_policy
from trainer.data.policies import PolicyDraws, apply_op, apply_policy, draw_policy, rand_arg, trivial_arg
from trainer.errors import UsageError

FILL = (124.0, 116.0, 104.0)  # timm's img_mean for the ImageNet mean


def _photos(n: int = 4, side: int = 32) -> torch.Tensor:
    """Photo-like uint8 images: smooth colour fields with edges (upsampled noise), where every op has work to do."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 6, 6, generator=g) * 255
    x = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8)


def _pil(x: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x]


def _tensor(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in images]).float()


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, most: int, share: float) -> None:
    diff = (ours - ref).abs()
    assert float(diff.max()) <= most and float((diff > 0).float().mean()) <= share, (float(diff.max()),
                                                                                      float((diff > 0).float().mean()))


@pytest.mark.parametrize("name", sorted(set(_RAND_OPS) | set(_RAND_INCREASING_OPS)))
def test_every_randaugment_op_is_timms_on_the_same_image_and_magnitude(name):
    from timm.data.auto_augment import AugmentOp

    x = _photos()
    for magnitude in (0, 3, 9, 10):
        for seed in (1, 2):  # timm's own coin for the sign: both signs of the signed ops
            op = AugmentOp(name, prob=1.0, magnitude=magnitude,
                           hparams={"img_mean": tuple(int(v) for v in FILL), "interpolation": Image.BICUBIC})
            refs = []
            for img in _pil(x):
                random.seed(seed)
                refs.append(op(img))
            ref = _tensor(refs)
            random.seed(seed)
            negate = random.random() > 0.5  # the draw timm's level function made
            arg = rand_arg(name, torch.full((len(x),), float(magnitude), dtype=torch.float64),
                           torch.full((len(x),), negate))
            ours = apply_op(name, x.float(), arg, FILL, "bicubic")
            # Equal but for float rounding at a few interpolated pixels.
            _assert_close(ours, ref, most=1, share=0.02)


@pytest.mark.parametrize("name", _TRIVIAL_OPS)
def test_every_trivialaugment_op_is_torchvisions_on_the_same_image_and_magnitude(name):
    from torchvision.transforms import InterpolationMode, v2

    x = _photos()
    ta = v2.TrivialAugmentWide()
    magnitudes, signed = ta._AUGMENTATION_SPACE[name]
    table = magnitudes(31, 32, 32)
    for bin_ in (0, 7, 15, 30):
        for negate in (False, True) if signed else (False,):
            m = float(table[bin_]) if table is not None and table.ndim else 0.0
            ref = torch.stack([ta._apply_image_or_video_transform(img, name, -m if negate else m,
                                                                  InterpolationMode.NEAREST, [0, 0, 0]) for img in x])
            arg = trivial_arg(name, torch.full((len(x),), bin_), torch.full((len(x),), negate), 32)
            ours = apply_op(name, x.float(), arg, (0.0, 0.0, 0.0), "nearest")
            # torchvision's colour ops round a float blend where PIL truncates: a step or two apart.
            _assert_close(ours, ref.float(), most=2, share=0.75)


@pytest.mark.parametrize("text", ["rand-m9-mstd0.5-inc1", "rand-m7-n3-p0.8", "rand-m9-mstd101", "rand-m15-mmax20-inc1",
                                  "rand-n1-tweights"])
def test_policy_strings_parse_as_timms(text):
    from timm.data.auto_augment import rand_augment_transform

    ref = rand_augment_transform(text, {})
    ours = parse_policy(text)
    assert ours.names == tuple(op.name for op in ref.ops) and ours.layers == ref.num_layers
    assert ours.prob == ref.ops[0].prob and ours.magnitude == ref.ops[0].magnitude
    assert ours.magnitude_std == ref.ops[0].magnitude_std
    assert ours.magnitude_max == (ref.ops[0].magnitude_max or 10)
    if ref.choice_weights is not None:
        assert np.allclose(np.array(ours.weights) / sum(ours.weights), ref.choice_weights)


@pytest.mark.parametrize("text, says", [("rand-m9-x3", "unknown section 'x3'"), ("auto-v0", "unknown policy 'auto'"),
                                        ("rand-p1.5", "p must be in [0, 1]"), ("rand-inc2", "inc must be 0 or 1"),
                                        ("rand-n0", "n must be between 1 and 15"), ("rand-m9.5", "unknown section")])
def test_a_policy_string_that_does_not_parse_names_the_accepted_forms(text, says):
    with pytest.raises(UsageError, match="pass rand-m9-mstd0.5-inc1") as e:
        parse_policy(text)
    assert says in str(e.value)


@pytest.mark.parametrize("text", ["rand-m9-mstd0.5-inc1-n3", "trivial"])
def test_a_batch_grouped_by_op_is_each_image_through_its_own_ops(text):
    policy = parse_policy(text)
    x = _photos(24).float()
    draws = draw_policy(24, policy, 32, torch.Generator().manual_seed(3))
    batched = apply_policy(x, draws, FILL, "bicubic")
    for i in range(24):
        one = x[i:i + 1]
        for layer in range(policy.layers):
            k = int(draws.op[i, layer])
            if k >= 0:
                one = apply_op(policy.names[k], one, draws.arg[i:i + 1, layer], FILL, "bicubic")
        assert torch.equal(batched[i:i + 1], one), i
    assert not torch.equal(batched, x)


def test_the_draws_have_the_policys_odds_and_repeat_for_the_same_generator_seed():
    policy = parse_policy("rand-m9-mstd0.5-inc1")
    a = draw_policy(20000, policy, 32, torch.Generator().manual_seed(1))
    b = draw_policy(20000, policy, 32, torch.Generator().manual_seed(1))
    assert torch.equal(a.op, b.op) and torch.equal(a.arg, b.arg)
    applied = (a.op >= 0).float().mean()
    assert abs(float(applied) - 0.5) < 0.01  # each of the 2 layers applies with p = 0.5
    counts = torch.bincount(a.op[a.op >= 0], minlength=15).float()
    assert float(counts.min()) > 0.8 * float(counts.mean())  # the 15 ops uniformly
    rotate = a.arg[a.op == policy.names.index("Rotate")]
    assert float(rotate.abs().max()) <= 30 and float((rotate < 0).float().mean()) == pytest.approx(0.5, abs=0.03)
    weighted = draw_policy(500, parse_policy("rand-n3-tweights"), 32, torch.Generator().manual_seed(2))
    picked = torch.where(weighted.op >= 0, weighted.op, torch.arange(3) - 10)
    assert all(len(set(row.tolist())) == 3 for row in picked)  # without replacement, as timm draws weighted ops
    trivial = draw_policy(3000, parse_policy("trivial"), 32, torch.Generator().manual_seed(4))
    assert trivial.op.shape == (3000, 1) and bool((trivial.op >= 0).all())  # one op, always applied


def test_policy_draws_take_rows_on_the_host():
    d = PolicyDraws(torch.arange(6).view(3, 2), torch.zeros(3, 2, dtype=torch.float64), ("A", "B"))
    t = d.take(torch.tensor([2, 0]))
    assert t.op.tolist() == [[4, 5], [0, 1]] and t.names == ("A", "B")
