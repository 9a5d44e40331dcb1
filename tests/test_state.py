"""The loop's figures and position (trainer/training/meters.py, state.py): averages, exact round trips, non-finite
losses caught."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from trainer.errors import UsageError
from trainer.training.meters import Meter
from trainer.training.state import LoopState


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def test_meter_averages_over_samples_and_restores(accelerator):
    meter = Meter(torch.device("cpu"), ("ce", "kd"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    meter.update(torch.tensor(1.0), logits, torch.tensor([0, 0, 0]), {"ce": torch.tensor(0.5), "kd": torch.tensor(2.0)})
    meter.update(torch.tensor(4.0), logits[:1], torch.tensor([1]), {"ce": torch.tensor(1.5), "kd": torch.tensor(6.0)})
    avg = meter.read(accelerator)
    assert avg.count == 4 and avg.loss == pytest.approx((3 * 1 + 4) / 4) and avg.top1 == pytest.approx(2 / 4)
    assert avg.parts == pytest.approx({"ce": (1.5 + 1.5) / 4, "kd": (6 + 6) / 4})
    again = Meter(torch.device("cpu"), ("ce", "kd"))
    again.load_state_dict(meter.state_dict(accelerator), 0)
    assert again.read(accelerator) == avg


def test_loop_state_round_trips_and_catches_non_finite_losses(accelerator):
    state = LoopState(Meter(torch.device("cpu")), epoch=2, micro=5, step=17, best_eval_top1=0.5, resume_key="k")
    state.record(torch.tensor(1.5), torch.eye(2), torch.tensor([0, 1]), {})
    saved = state.state_dict(accelerator)
    restored = LoopState(Meter(torch.device("cpu")))
    restored.load_state_dict(saved, 0)
    assert restored.state_dict(accelerator) == {**saved, "train_time_s": pytest.approx(saved["train_time_s"])}
    state.check_finite("out")
    state.step = 20
    state.record(torch.tensor(float("nan")), torch.eye(2), torch.tensor([0, 1]), {})
    state.step = 21
    state.record(torch.tensor(float("inf")), torch.eye(2), torch.tensor([0, 1]), {})
    with pytest.raises(UsageError, match="non-finite at step 21"):  # the first bad one, 20 steps taken
        state.check_finite("out")
    with pytest.raises(UsageError, match="another version"):
        restored.load_state_dict({k: v for k, v in saved.items() if k != "meter"}, 0)
