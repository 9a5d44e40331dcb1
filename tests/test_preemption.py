"""The pieces of preemption safety, in process: the stop signal, and telling a whole checkpoint from a damaged one."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import save_file

from trainer.distributed import make_accelerator
from trainer.errors import UsageError
from trainer.training.preemption import StopSignal
from trainer.training.checkpoints import STATE_FILE, checkpoint_problem, find_checkpoint, manifest


def test_sigterm_and_sigint_are_noted_until_the_loop_asks_then_handlers_come_back():
    acc = make_accelerator()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with StopSignal(acc) as stop:
        assert not stop.due()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.due() and stop.received == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # a second signal: still the first one's stop, no KeyboardInterrupt
        assert stop.due() and stop.received == "SIGTERM"
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with StopSignal(acc) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.due() and stop.received == "SIGINT"


def _checkpoint(folder, step: int) -> str:
    """A checkpoint folder shaped like save_checkpoint's: safetensors weights, torch.save files, the state file."""
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(folder / "model.safetensors"))
    torch.save({"state": {}, "param_groups": [{"lr": 0.1}]}, str(folder / "optimizer.bin"))
    (folder / STATE_FILE).write_text(json.dumps({"step": step, "files": manifest(str(folder))}))
    return str(folder)


def _zero_256_bytes(folder) -> None:
    with open(folder / "model.safetensors", "r+b") as f:
        f.seek(-256, os.SEEK_END)
        f.write(b"\0" * 256)


@pytest.mark.parametrize("damage, problem", [
    (None, None),
    (lambda f: os.truncate(f / "model.safetensors", 100), "model.safetensors has 100 of its"),
    (lambda f: (f / "optimizer.bin").unlink(), "optimizer.bin is missing"),
    (lambda f: (f / "optimizer.bin").write_bytes(b"\0" * (f / "optimizer.bin").stat().st_size),
     "optimizer.bin differs from the digest"),
    (_zero_256_bytes, "model.safetensors differs from the digest"),  # same size, other bytes
    (lambda f: (f / "custom_checkpoint_0.pkl").write_bytes(b"planted"), "custom_checkpoint_0.pkl is a pickle"),
    (lambda f: (f / "notes.txt").write_text("hi"), "notes.txt is not a file this checkpoint wrote"),
    (lambda f: (f / "optimizer.bin").unlink() or (f / "optimizer.bin").symlink_to(f / "model.safetensors"),
     "optimizer.bin is not a regular file"),
    (lambda f: (f / STATE_FILE).write_text(json.dumps({"step": 5, "files": {"model.safetensors": 10}})),
     "it was written by an older trainer"),
    (lambda f: (f / STATE_FILE).unlink(), f"{STATE_FILE} is missing"),
    (lambda f: (f / STATE_FILE).write_text('{"step": 5, "fi'), f"{STATE_FILE} is unreadable"),
    (lambda f: (f / "pytorch_model_fsdp_0").mkdir(), None),  # FSDP's sharded state is a folder: not a damage
])
def test_checkpoint_problem_names_what_is_damaged(tmp_path, damage, problem):
    folder = tmp_path / "step-5"
    _checkpoint(folder, 5)
    if damage:
        damage(folder)
    found = checkpoint_problem(str(folder))
    assert (found is None) if problem is None else (found is not None and found.startswith(problem)), found


def test_the_newest_whole_checkpoint_is_found_and_damaged_ones_are_named(tmp_path, capsys):
    out = tmp_path / "run"
    assert find_checkpoint("auto", str(out)) is None  # no checkpoint at all: a fresh start
    with pytest.raises(UsageError, match="no checkpoint in"):
        find_checkpoint("latest", str(out))
    for step in (5, 10, 15):
        _checkpoint(out / "checkpoints" / f"step-{step}", step)
    os.truncate(out / "checkpoints" / "step-15" / "optimizer.bin", 10)
    for how in ("auto", "latest"):
        assert find_checkpoint(how, str(out)) == str(out / "checkpoints" / "step-10")
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "step-15" in err[0] and "optimizer.bin has 10 of its" in err[0]
    with pytest.raises(UsageError, match="not a whole checkpoint"):
        find_checkpoint(str(out / "checkpoints" / "step-15"), str(out))
    (out / "checkpoints" / "step-10" / "model.safetensors").unlink()
    (out / "checkpoints" / "step-5" / STATE_FILE).unlink()
    with pytest.raises(UsageError, match="no whole checkpoint .*step-15.*step-10: model.safetensors is missing.*step-5"):
        find_checkpoint("auto", str(out))
