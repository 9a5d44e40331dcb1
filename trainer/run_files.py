"""The files a finished run leaves in its folder (model.safetensors, config.json, summary.json, metrics.jsonl, ...):
their names, writing them atomically, finding and checking them again. What config.json and summary.json hold is
run_records.py's; resumable training state (checkpoints/step-N) is training/checkpoints.py's."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock, the file checks still refuse a folder in use
    fcntl = None  # type: ignore[assignment]

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import UsageError, human_size

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval_predictions.safetensors"
EMA_FILE = "model_ema.safetensors"  # with --model-ema: the averaged weights, loadable as the model is
CARD_FILE = "README.md"  # the model card: what the Hub shows
CURVES_FILE = "curves.png"  # drawn from metrics.jsonl when a run ends; not needed to load or continue a run
RUN_FILES = (MODEL_FILE, CONFIG_FILE, SUMMARY_FILE, METRICS_FILE, EVAL_FILE, EMA_FILE)
FINISHED_FILES = (MODEL_FILE, CONFIG_FILE, SUMMARY_FILE)  # written when a run ends


class WriteFailed(UsageError):
    """A file could not be written (a full disk, a read-only folder, ...); nothing half-written is left."""


def nearest_folder(path: str) -> str:
    """The path itself or its nearest parent that exists."""
    probe = os.path.abspath(path)
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def write_failed(path: str, err: BaseException, fix: str = "free space or fix the permissions there, then run the "
                 "same command again") -> WriteFailed:
    """The one line for a failed write: where, why (a full disk raises OSError in numpy, RuntimeError in torch,
    SafetensorError in safetensors), how much room is left, and the fix."""
    why = err.strerror if isinstance(err, OSError) and err.strerror else _short(err)
    try:
        room = f"; {human_size(shutil.disk_usage(nearest_folder(os.path.dirname(path) or '.')).free)} free there"
    except OSError:
        room = ""
    return WriteFailed(f"could not write {path} ({why}{room}): {fix}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[str], None], fix: Optional[str] = None) -> None:
    """Call write(tmp_path) and rename onto path, so a reader never sees half a file; on any failure the temporary
    file is removed and WriteFailed says why. The file gets the permissions the umask gives (not mkstemp's 0600)."""
    tmp = ""
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # after the writer: some (safetensors) make the file anew
        os.replace(tmp, path)
    except BaseException as err:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, Exception):
            raise (write_failed(path, err, fix) if fix else write_failed(path, err)) from None
        raise


def atomic_write_dir(path: str, write: Callable[[str], None], fix: Optional[str] = None) -> None:
    """atomic_write for a folder (a Core ML .mlpackage): write(tmp_path) beside it, then swapped in; an older folder
    at path is put back on any failure and removed only once the new one is in place."""
    tmp = ""
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        new, old = os.path.join(tmp, os.path.basename(path)), os.path.join(tmp, "previous")
        write(new)
        if os.path.lexists(path):
            os.replace(path, old)
        try:
            os.replace(new, path)
        except BaseException:
            if os.path.lexists(old):
                os.replace(old, path)
            raise
    except BaseException as err:
        if isinstance(err, Exception):
            raise (write_failed(path, err, fix) if fix else write_failed(path, err)) from None
        raise
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str, obj: Any, fix: Optional[str] = None) -> None:
    """Write indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n", fix)


def write_text(path: str, text: str, fix: Optional[str] = None) -> None:
    """Write a text file atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, _write, fix)


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str, fix: Optional[str] = None) -> None:
    """Save a plain timm state dict (contiguous CPU tensors) as safetensors, atomically."""
    # torch.compile prefixes keys with _orig_mod.; timm expects the plain names.
    state = {k.removeprefix("_orig_mod."): v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}), fix)


def file_digest(path: str, algorithm: str = "sha1") -> str:
    """The hex digest of a file's bytes (sha1 for cache keys, sha256 where it guards against tampering)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_weight_shapes(path: str, what: str = "checkpoint") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a .safetensors/.pth file; UsageError when it can't be read."""
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path} does not exist: check the path")
    if path.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as err:
            raise UsageError(f"{what} {path} is not a readable safetensors file ({_short(err)}): "
                             "it may be truncated or corrupt; save or download it again") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(f"{what} {path} is not a readable PyTorch/safetensors weights file ({_short(err)}): "
                         "pass a .safetensors or .pth state dict") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{what} {path} holds no state dict of tensors: pass a file saved from model.state_dict()")
    return {k.removeprefix("module."): tuple(v.shape) for k, v in obj.items()}


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def resolve_run(path: str, what: str = "checkpoint") -> tuple[str, str]:
    """(model.safetensors, config.json) of a run folder, or of a model file with config.json beside it."""
    weights = os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path
    if not os.path.exists(path):
        raise UsageError(f"{what} {path} does not exist: pass a train_cls.py output folder or its {MODEL_FILE}")
    if not os.path.isfile(weights):
        raise UsageError(f"{what} folder {path} has no {MODEL_FILE}: pass a finished train_cls.py output folder")
    if not weights.endswith(".safetensors"):
        raise UsageError(f"{what} {path} is not a safetensors checkpoint: pass a train_cls.py output folder "
                         f"or its {MODEL_FILE}")
    config = os.path.join(os.path.dirname(os.path.abspath(weights)), CONFIG_FILE)
    if not os.path.isfile(config):
        raise UsageError(f"{what} {weights} has no {CONFIG_FILE} beside it: keep the run folder together "
                         "(train_cls.py writes both)")
    return weights, config


def output_dir_in_use(output_dir: str, names: tuple[str, ...] = RUN_FILES) -> Optional[str]:
    """The first of these run files already in output_dir, if any."""
    for name in names:
        if os.path.exists(os.path.join(output_dir, name)):
            return name
    return None


class OutputFolder:
    """--output-dir held by one run: made if it is not there, locked so that a second run on it is refused at once,
    and removed again on the way out if this run made it and left it empty (bad input found later). The lock is an
    flock on the folder itself: it writes nothing, and the system drops it when the process ends, however it ends."""

    def __init__(self, path: str, main: bool = True):
        self.path, self.main = path, main
        self.created = False
        self._fd: Optional[int] = None

    def __enter__(self) -> OutputFolder:
        if not self.main:  # the main process holds the folder for every process of the run
            return self
        if not self.path:
            raise UsageError("--output-dir is empty: pass a folder path")
        try:
            self.created = not os.path.isdir(self.path)
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as err:
            raise UsageError(f"--output-dir {self.path} cannot be made or opened ({err.strerror}): pass a folder you "
                             "can write") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            os.close(fd)
            self._remove_if_made()
            raise UsageError(f"--output-dir {self.path} is not writable: pass a folder you can write")
        self._fd = fd
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.__exit__(None, None, None)
                raise UsageError(f"--output-dir {self.path} is in use by another run right now: wait for it to end, "
                                 "or pass another folder") from None
        return self

    def _remove_if_made(self) -> None:
        if self.created and os.path.isdir(self.path) and not os.listdir(self.path):
            os.rmdir(self.path)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
        if exc and exc[0] is not None:
            self._remove_if_made()


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl file. A last line cut short (a kill or a full disk in the middle of an append)
    is left out; a damaged line anywhere else is an error."""
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    records = []
    for k, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if k < len(lines) - 1:
                raise UsageError(f"{path} line {k + 1} is not JSON: restore the file or start the run again with "
                                 "--overwrite") from None
    return records
