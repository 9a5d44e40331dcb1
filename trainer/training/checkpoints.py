"""Resumable checkpoints (OUTPUT_DIR/checkpoints/step-N): accelerate's save_state (weights as safetensors, optimizer
and RNG states loaded back with weights_only=True), the loop's and the scheduler's state as JSON and the EMA as
safetensors, with a manifest of every file's size and SHA-256; written under a temporary name and renamed. Finding
the newest one whose files all match their manifest, and checking that it belongs to these arguments. Nothing here is
registered with accelerate's register_for_checkpointing: that saves a pickle and loads it with weights_only=False.
A finished run's files are run_files.py's."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
from typing import Any, Optional

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from ..config import TrainConfig
from ..distributed import all_succeeded
from ..errors import UsageError, first_line, warn
from ..run_files import WriteFailed, file_digest, write_failed

STATE_FILE = "trainer_state.json"
EMA_STATE_FILE = "ema.safetensors"
# Arguments that may change between a run and its resumption: they do not touch the weights or the metrics.
RESUME_FREE_ARGS = ("resume_from", "overwrite", "progress", "checkpoint_every", "keep_checkpoints", "report_to",
                    "cache_dir", "output_dir", "data_on")
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-step-"
# Where accelerate's register_for_checkpointing saves objects, loaded with weights_only=False.
_CUSTOM_STATE = re.compile(r"^custom_checkpoint_\d+\.pkl$")


def checkpoints_dir(output_dir: str) -> str:
    """OUTPUT_DIR/checkpoints."""
    return os.path.join(output_dir, "checkpoints")


def list_checkpoints(output_dir: str) -> list[str]:
    """Checkpoint folders (whole or damaged), oldest first."""
    root = checkpoints_dir(output_dir)
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(root) if (m := _STEP_DIR.match(name))]
    return [os.path.join(root, name) for _, name in sorted(found)]


def _walk_files(folder: str) -> dict[str, os.stat_result]:
    """Every entry under folder that is not a folder (FSDP's sharded state has folders), by its relative path."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder).replace(os.sep, "/")] = os.lstat(path)
    return found


def checkpoint_problem(folder: str) -> Optional[str]:
    """Why a checkpoint folder cannot be resumed from, or None when every file matches the manifest written with it
    and no other file is there."""
    try:
        with open(os.path.join(folder, STATE_FILE)) as f:
            state = json.load(f)
        int(state["step"])
        files = state["files"]
    except FileNotFoundError:
        return f"{STATE_FILE} is missing"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{STATE_FILE} is unreadable"
    if isinstance(files, dict) and files and all(isinstance(v, int) for v in files.values()):
        return "it was written by an older trainer, without file digests"
    try:
        listed = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        return f"{STATE_FILE} is unreadable"
    present = _walk_files(folder)
    present.pop(STATE_FILE, None)
    for name in sorted(set(listed) | set(present)):
        if _CUSTOM_STATE.match(os.path.basename(name)):
            return f"{name} is a pickle this trainer never writes (loading it could run code)"
        if name not in present:
            return f"{name} is missing"
        if name not in listed:
            return f"{name} is not a file this checkpoint wrote"
        if not stat.S_ISREG(present[name].st_mode):
            return f"{name} is not a regular file"
        size, digest = listed[name]
        if present[name].st_size != size:
            return f"{name} has {present[name].st_size} of its {size} bytes"
        if file_digest(os.path.join(folder, name), "sha256") != digest:
            return f"{name} differs from the digest written with it (damaged or altered)"
    return None


def find_checkpoint(resume_from: str, output_dir: str) -> Optional[str]:
    """The folder --resume-from names: 'latest' and 'auto' take the newest whole one in OUTPUT_DIR/checkpoints,
    skipping damaged ones with a line each; 'auto' gives None where there is no checkpoint at all."""
    if resume_from not in ("latest", "auto"):
        problem = checkpoint_problem(resume_from) if os.path.isdir(resume_from) else "not a folder"
        if problem:
            raise UsageError(f"--resume-from {resume_from} is not a whole checkpoint ({problem}): pass another "
                             "OUTPUT_DIR/checkpoints/step-N folder, or 'auto' for the newest whole one")
        return resume_from
    found = list_checkpoints(output_dir)
    if not found:
        if resume_from == "auto":
            return None
        raise UsageError(f"--resume-from latest: no checkpoint in {checkpoints_dir(output_dir)}; "
                         "start the run with --checkpoint-every to make them, or pass --resume-from auto")
    problems = []
    for folder in reversed(found):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        problems.append(f"{os.path.basename(folder)}: {problem}")
        warn(f"skipping the damaged checkpoint {folder} ({problem}); trying the one before it")
    raise UsageError(f"--resume-from {resume_from}: no whole checkpoint in {checkpoints_dir(output_dir)} "
                     f"({'; '.join(problems)}): pass --overwrite without --resume-from to start the run again")


def trajectory_args(cfg: TrainConfig) -> dict[str, Any]:
    """The arguments that decide the weights and the metrics (a resume must keep them), as JSON would compare them."""
    return json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE_ARGS}))


def check_resumable(cfg: TrainConfig) -> Optional[str]:
    """The checkpoint to resume from (None: start afresh), checked to come from a run with the same arguments."""
    folder = find_checkpoint(str(cfg.resume_from), cfg.output_dir) if cfg.resume_from else None
    if folder is None:
        return None
    with open(os.path.join(folder, STATE_FILE)) as f:
        saved = json.load(f).get("args", {})
    now = trajectory_args(cfg)
    defaults = trajectory_args(TrainConfig())  # an option newer than the checkpoint was, then, at its default
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k, defaults.get(k)) != now.get(k))
    if changed:
        first = changed[0]
        raise UsageError(f"--resume-from {folder} was saved by a run with other arguments ({', '.join(changed)}; "
                         f"e.g. {first}: {saved.get(first)!r} then, {now.get(first)!r} now): resume with the same "
                         "arguments, or start a new run")
    return folder


def load_checkpoint(accelerator: Accelerator, folder: str, ema: Optional[torch.nn.Module] = None) -> dict[str, Any]:
    """Restore model, optimizer and RNG states (accelerate's, weights_only=True) and the EMA's weights from a whole
    checkpoint; return the loop's state (the scheduler's inside, as JSON)."""
    with open(os.path.join(folder, STATE_FILE)) as f:
        state = json.load(f)
    try:
        accelerator.load_state(folder)
        if ema is not None:
            ema.load_state_dict(load_file(os.path.join(folder, EMA_STATE_FILE)))
    except (OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
        raise UsageError(f"the checkpoint {folder} could not be loaded ({first_line(err, 160)}): pass "
                         "--resume-from with an older OUTPUT_DIR/checkpoints/step-N folder") from None
    return state


def manifest(folder: str) -> dict[str, dict[str, Any]]:
    """Each file's size and SHA-256, by its path relative to the folder."""
    return {name: {"bytes": st.st_size, "sha256": file_digest(os.path.join(folder, name), "sha256")}
            for name, st in sorted(_walk_files(folder).items()) if name != STATE_FILE}


def _one_mode(folder: str) -> None:
    """Give every file of the folder the mode the umask gives a new file: safetensors writes 0600 where
    torch.save writes 0644, and a checkpoint's files should not differ in who may read them."""
    umask = os.umask(0)
    os.umask(umask)
    for name in _walk_files(folder):
        os.chmod(os.path.join(folder, name), 0o666 & ~umask)


def _write_failed(root: str, error: Optional[Exception], previous: Optional[str]) -> UsageError:
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    line = str(write_failed(root, error or RuntimeError("on another process"), "free space or fix the permissions "
                            f"there, then resume with --resume-from auto; {kept}"))
    return WriteFailed(line.replace("could not write ", "could not write a checkpoint in ", 1))


def save_checkpoint(accelerator: Accelerator, cfg: TrainConfig, state: dict[str, Any],
                    ema: Optional[torch.nn.Module] = None) -> str:
    """Write checkpoints/step-N/ under a temporary name (the EMA's weights beside accelerate's state), list its files'
    sizes and digests in the state file, rename it into place and keep the newest cfg.keep_checkpoints. A failed
    write stops the run; older checkpoints stay whole."""
    root = checkpoints_dir(cfg.output_dir)
    final = os.path.join(root, f"step-{state['step']}")
    tmp = os.path.join(root, f"{_TMP_PREFIX}{state['step']}")
    found = list_checkpoints(cfg.output_dir)
    previous = found[-1] if found else None
    error: Optional[Exception] = None
    try:
        if accelerator.is_main_process:
            os.makedirs(root, exist_ok=True)
            for name in os.listdir(root):  # left by a run killed while saving
                if name.startswith(_TMP_PREFIX):
                    shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    except OSError as err:
        error = err
    if all_succeeded(error, accelerator):  # also the barrier: the folder exists and is empty for everyone
        try:
            accelerator.save_state(tmp)
            if ema is not None and accelerator.is_main_process:
                save_file({k: v.detach().contiguous() for k, v in ema.state_dict().items()},
                          os.path.join(tmp, EMA_STATE_FILE))
        except Exception as err:  # a full disk: OSError (numpy), RuntimeError (torch), SafetensorError (safetensors)
            error = err
    if all_succeeded(error, accelerator) and accelerator.is_main_process:
        try:
            files = manifest(tmp)
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump({**state, "args": trajectory_args(cfg), "files": files}, f)
            _one_mode(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except OSError as err:
            error = err
    if not all_succeeded(error, accelerator):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failed(root, error, previous)
    if accelerator.is_main_process:
        for old in list_checkpoints(cfg.output_dir)[:-cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
