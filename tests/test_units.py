"""Fast tests of the pieces: augmentation against PIL/torchvision, the epoch plan and its per-process slices, the
schedule, the meter, the loop state, shard/gather, the generated command line."""
from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from accelerate import Accelerator
from PIL import Image

from trainer.augment import Draws, View, augment, preprocess
from trainer.batches import epoch_slices, padded_positions, plan_epoch
from trainer.config import TrainConfig, build_parser, parse_args, validate
from trainer.distributed import gather_shards, shard, shard_batches
from trainer.errors import UsageError
from trainer.loop_state import LoopState
from trainer.metrics import Meter
from trainer.optim import cosine_with_warmup

VIEW = View(16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def _images(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def _normalised(x: torch.Tensor, view: View) -> torch.Tensor:
    return TF.normalize(x.float() / 255, list(view.mean), list(view.std))


def test_flip_and_normalise_match_torchvision():
    x = _images()
    flip = torch.tensor([True, False, True, True, False, False])
    expected = torch.stack([TF.hflip(img) if f else img for img, f in zip(x, flip, strict=True)])
    assert torch.allclose(augment(x, VIEW, Draws(flip=flip)), _normalised(expected, VIEW), atol=1e-5)


def test_reflect_pad_crop_matches_torchvision():
    x, pad = _images(), 3
    offsets = torch.tensor([[0, 0], [6, 6], [1, 5], [3, 3], [6, 0], [2, 4]])
    expected = torch.stack([TF.crop(TF.pad(img, [pad], padding_mode="reflect"), int(dy), int(dx), 16, 16)
                            for img, (dy, dx) in zip(x, offsets, strict=True)])
    assert torch.allclose(augment(x, VIEW, Draws(crop=offsets, crop_pad=pad)), _normalised(expected, VIEW), atol=1e-5)


@pytest.mark.parametrize("interpolation, pil", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
def test_resize_on_the_cpu_matches_pil(interpolation, pil):
    """The training resize is PIL's antialiased one, as in timm's PIL transforms, up to rounding: at most 2 of 255
    levels apart and under 0.1 of a level on average (measured on noise, the hardest case)."""
    x = _images(4, 32)
    for size in (16, 56):
        view = View(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), interpolation)
        got = preprocess(x, view) * 0.5 + 0.5
        ref = torch.stack([TF.to_tensor(Image.fromarray(img.permute(1, 2, 0).numpy()).resize((size, size), pil))
                           for img in x])
        diff = (got - ref).abs() * 255
        assert diff.max() <= 2.01 and diff.mean() <= 0.1


def test_epoch_plan_is_a_function_of_seed_and_epoch():
    a, b = plan_epoch(50, 3, 1, True, 2), plan_epoch(50, 3, 1, True, 2)
    assert torch.equal(a.order, b.order) and torch.equal(a.flip, b.flip) and torch.equal(a.crop, b.crop)
    assert sorted(a.order.tolist()) == list(range(50))
    assert not torch.equal(a.order, plan_epoch(50, 3, 2, True, 2).order)
    assert not torch.equal(a.order, plan_epoch(50, 4, 1, True, 2).order)
    assert int(a.crop.min()) >= 0 and int(a.crop.max()) <= 4


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


def _fake(world: int, rank: int) -> SimpleNamespace:
    return SimpleNamespace(num_processes=world, process_index=rank)


@pytest.mark.parametrize("n, world, batch_size", [(10, 3, 2), (3, 2, 1), (1001, 2, 64), (2, 4, 5)])
def test_shards_cover_every_row_once_in_equal_batch_counts(n, world, batch_size):
    rows, counts = [], set()
    for rank in range(world):
        lo, hi = shard(n, _fake(world, rank))
        batches = shard_batches(n, batch_size, _fake(world, rank))
        counts.add(len(batches))
        assert all(lo <= i <= j <= hi for i, j in batches)
        rows += [r for i, j in batches for r in range(i, j)]
    assert rows == list(range(n)) and len(counts) == 1


def test_gather_puts_every_shard_back_in_order():
    n, world = 10, 3
    rows = torch.arange(n) * 10
    sent = {}
    for rank in range(world):
        lo, hi = shard(n, _fake(world, rank))
        gather_shards(rows[lo:hi], n, SimpleNamespace(num_processes=world, gather=lambda t, r=rank: sent.setdefault(r, t)))
    everyone = SimpleNamespace(num_processes=world, gather=lambda t: torch.cat([sent[r] for r in range(world)]))
    assert torch.equal(gather_shards(rows[0:4], n, everyone), rows)


def test_schedule_warms_up_then_decays_to_the_floor():
    f = cosine_with_warmup(total_steps=100, warmup_steps=10, min_ratio=0.1)
    warm = [f(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(1 / 11) and f(10) == pytest.approx(1.0)
    decay = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5) and f(100) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


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
    state = LoopState(Meter(torch.device("cpu")), epoch=2, micro=5, step=17, best_eval_top1=0.5, task_key="k")
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


def test_every_option_is_on_the_command_line_once():
    kd_flags = {a.dest for a in build_parser(kd=True)._actions if a.dest != "help"}
    cls_flags = {a.dest for a in build_parser()._actions if a.dest != "help"}
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


@pytest.mark.parametrize("capability, study_precision, warned", [((7, 5), "fp16", True), ((7, 0), "fp16", True),
                                                                 ((8, 0), "bf16", False), ((9, 0), "bf16", False)])
def test_bf16_is_not_picked_where_it_is_emulated(monkeypatch, capability, study_precision, warned):
    """A T4 (7.5) says is_bf16_supported() == True; the study must still pick fp16 and a bf16 run must say why."""
    from trainer.distributed import precision_warning
    from trainer.study.presets import hw2_preset

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    p = hw2_preset()
    assert p.mixed_precision == study_precision and p.bench_precision == study_precision
    line = precision_warning("bf16", torch.device("cuda"))
    assert (line is not None) == warned
    if warned:
        assert "emulated" in line and "--mixed-precision fp16" in line and f"{capability[0]}.{capability[1]}" in line
    assert precision_warning("fp16", torch.device("cuda")) is None
    assert precision_warning("bf16", torch.device("cpu")) is None


def test_per_class_metrics_through_evaluate_match_scikit_learn():
    """The package's own `evaluate` module, loaded offline, against scikit-learn's reference implementation."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from trainer.inference import per_class_report

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    preds = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 5, 300))
    preds[preds == 4] = 3  # class 4 is never predicted: its precision is 0 by convention, not NaN
    got = per_class_report(torch.tensor(preds), torch.tensor(labels), [f"c{k}" for k in range(6)])
    p, r, f, support = precision_recall_fscore_support(labels, preds, labels=range(6), zero_division=0)
    assert got["precision"] == pytest.approx(p.tolist()) and got["recall"] == pytest.approx(r.tolist())
    assert got["f1"] == pytest.approx(f.tolist()) and got["support"] == support.tolist()
    assert got["confusion_matrix"] == confusion_matrix(labels, preds, labels=range(6)).tolist()
    assert got["accuracy"] == pytest.approx((preds == labels).mean()) and got["label_names"][5] == "c5"


def test_the_curves_show_the_loss_parts_of_a_distillation(tmp_path):
    from trainer.study.plots import plot_curves

    def records(parts: bool) -> list:
        return [{"event": event, "epoch": float(e), "step": e, "loss": 1.0 / e, "top1": 0.1 * e,
                 **({"loss_ce": 1.2 / e, "loss_kd": 0.8 / e} if parts and event == "train" else {})}
                for e in (1, 2, 3) for event in ("train", "eval")]

    alone = {"part3_tiny_pretrained": {"records": records(False)}}
    assert len(plot_curves(alone, str(tmp_path / "a.png"))) == 2
    titles = plot_curves({**alone, "part4_tiny_distilled": {"records": records(True)}}, str(tmp_path / "b.png"))
    assert len(titles) == 3 and "teacher term (KD)" in titles[2]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
