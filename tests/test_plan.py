"""The epoch plan (trainer/data/plan.py): a function of seed and epoch, and its equal per-process batches."""
from __future__ import annotations

import pytest
import torch

from trainer.data.plan import Augmentation, epoch_slices, padded_positions, plan_epoch


def test_epoch_plan_is_a_function_of_seed_and_epoch():
    aug = Augmentation(flip=True, crop_pad=2)
    a, b = plan_epoch(50, 3, 1, aug), plan_epoch(50, 3, 1, aug)
    assert torch.equal(a.order, b.order) and torch.equal(a.draws.flip, b.draws.flip)
    assert torch.equal(a.draws.crop, b.draws.crop)
    assert sorted(a.order.tolist()) == list(range(50))
    assert not torch.equal(a.order, plan_epoch(50, 3, 2, aug).order)
    assert not torch.equal(a.order, plan_epoch(50, 4, 1, aug).order)
    assert int(a.draws.crop.min()) >= 0 and int(a.draws.crop.max()) <= 4


@pytest.mark.parametrize("n, batch_size, world", [(10, 3, 1), (10, 3, 4), (7, 2, 3), (64, 16, 2), (5, 8, 2)])
def test_every_process_gets_equal_batches_covering_the_padded_order(n, batch_size, world):
    padded = padded_positions(n, world)
    assert len(padded) % world == 0 and padded[:n].tolist() == list(range(n))
    per_rank = [epoch_slices(n, batch_size, world, r) for r in range(world)]
    assert len({len(s) for s in per_rank}) == 1  # every process takes the same number of steps
    seen = sorted(i for slices in per_rank for lo, hi in slices for i in range(lo, hi))
    assert seen == list(range(len(padded)))  # every padded position once
    for k in range(len(per_rank[0])):  # a global batch is split evenly
        assert len({hi - lo for lo, hi in (s[k] for s in per_rank)}) == 1
