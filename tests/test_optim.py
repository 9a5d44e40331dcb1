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
