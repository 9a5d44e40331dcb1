"""Processes (trainer/distributed.py): shards, gathering them back, and the bf16-on-a-T4 trap."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainer.distributed import gather_shards, precision_warning, shard, shard_batches
from trainer.study.presets import hw2_preset


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


@pytest.mark.parametrize("capability, study_precision, warned", [((7, 5), "fp16", True), ((7, 0), "fp16", True),
                                                                 ((8, 0), "bf16", False), ((9, 0), "bf16", False)])
def test_bf16_is_not_picked_where_it_is_emulated(monkeypatch, capability, study_precision, warned):
    """A T4 (7.5) says is_bf16_supported() == True; the study must still pick fp16 and a bf16 run must say why."""
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
    monkeypatch.setattr("trainer.distributed.cpu_bf16_is_emulated", lambda: False)
    assert precision_warning("bf16", torch.device("cpu")) is None


def test_bf16_on_a_cpu_without_bf16_arithmetic_says_so(monkeypatch):
    monkeypatch.setattr("trainer.distributed.cpu_bf16_is_emulated", lambda: True)
    line = precision_warning("bf16", torch.device("cpu"))
    assert line is not None and "emulated on this CPU" in line and "fp32" in line
    assert precision_warning("no", torch.device("cpu")) is None
