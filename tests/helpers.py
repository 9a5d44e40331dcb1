"""What the tests share: small image datasets they write themselves, the small ViT's arguments, running an entry
point (in this interpreter or a fresh one), and comparing two runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from trainer.run_files import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"
# A ViT of the same family as vit_tiny, sized for 2 CPU cores.
SMALL_VIT = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=8", "depth=2"]
SMALL_VIT_KWARGS = {"patch_size": 8, "depth": 2}

needs_cifar10 = pytest.mark.skipif(
    not (CIFAR10 / "plain_text").is_dir(),
    reason=f"real CIFAR-10 not found at {CIFAR10} (the workplace copy of uoft-cs/cifar10; absent in a user's clone)")


def make_images(labels: np.ndarray, size: int, rng: np.random.Generator, palette: np.ndarray) -> list:
    """Learnable toy images: each class has its own colour and stripe direction, under heavy noise."""
    from PIL import Image

    out = []
    for y in labels:
        # The per-image colour shift makes classes overlap: no model gets everything right, so models differ.
        img = rng.normal(0, 60, size=(size, size, 3)) + palette[y] + rng.normal(0, 18, size=3)
        if y % 2:
            img[::4, :, :] += 20
        else:
            img[:, ::4, :] += 20
        out.append(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)))
    return out


def make_dataset(path: Path, per_class: dict[str, int], num_classes: int = 4, size: int = 32,
                 image_column: str = "img", label_column: str = "label", seed: int = 0,
                 rows: dict[str, int] | None = None, spread: float = 1.0) -> Path:
    """Write a save_to_disk DatasetDict with Image and ClassLabel features (rows: exact row counts per split)."""
    import datasets

    rng = np.random.default_rng(seed)
    names = [f"class{k}" for k in range(num_classes)]
    features = datasets.Features({image_column: datasets.Image(), label_column: datasets.ClassLabel(names=names)})
    # spread < 1 pulls the class colours together: a harder task on which models make different mistakes.
    palette = 128 + spread * (np.random.default_rng(1234).integers(100, 156, size=(num_classes, 3)) - 128)
    splits = {}
    for split, n in {**per_class, **(rows or {})}.items():
        count = (rows or {}).get(split, n * num_classes)
        labels = np.arange(count) % num_classes
        rng.shuffle(labels)
        splits[split] = datasets.Dataset.from_dict(
            {image_column: make_images(labels, size, rng, palette), label_column: labels.tolist()},
            features=features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def run_here(main: Callable[[list[str]], Any], *args: str, capsys: Any) -> subprocess.CompletedProcess:
    """Run an entry point (trainer.commands.train.main_cls, ...) in this interpreter, as run_script does in a fresh one:
    its exit code and what it printed. Only where the fresh interpreter is not what is tested: one costs ~10 s of imports."""
    capsys.readouterr()
    code: Any = 0
    try:
        main(list(args))
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def run_script(script: str, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a top-level script (or -m module) in a fresh interpreter, as a user would."""
    cmd = [sys.executable, *(["-m", script[3:]] if script.startswith("-m ") else [str(ROOT / script)]), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)


def make_photo_dataset(path: Path, per_class: dict[str, int], num_classes: int = 3, seed: int = 0) -> Path:
    """JPEG photos of mixed sizes and shapes (30..90 px a side), stored as JPEG bytes, in a save_to_disk folder."""
    import io

    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = [f"class{k}" for k in range(num_classes)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split, n in per_class.items():
        labels = np.arange(n * num_classes) % num_classes
        images = []
        for y in labels:
            h, w = rng.integers(30, 91, size=2)
            yy, xx = np.mgrid[0:h, 0:w]
            waves = 80 * np.sin(xx / (3 + y))[..., None] + 40 * np.cos(yy / 5)[..., None]
            img = 60 * y + waves + rng.normal(0, 20, (h, w, 3))
            buf = io.BytesIO()
            Image.fromarray(np.clip(img + 60, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
            images.append(Image.open(io.BytesIO(buf.getvalue())))  # format JPEG: datasets keeps these bytes
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def wait_for_step(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 300) -> None:
    """Until a running training has logged `step` (it is then in its loop, mid-epoch)."""
    import time


    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(r.get("step", 0) >= step for r in read_jsonl(str(metrics))):
            return
        time.sleep(0.01)
    raise AssertionError("the run ended before the signal could be sent")


def strip_timing(records: list) -> list:
    """Metric records without their wall-clock figures."""
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def assert_same_run(ref: Path, out: Path) -> None:
    """Two run folders hold the same weights and the same metric lines."""
    from safetensors.torch import load_file


    a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    assert strip_timing(read_jsonl(str(out / "metrics.jsonl"))) == strip_timing(read_jsonl(str(ref / "metrics.jsonl")))


class SmallDisk:
    """A real file system of a few megabytes (tmpfs), so that a full disk fails as it does in the field: ENOSPC from
    numpy, torch and safetensors alike, each with its own exception type. Mounting needs root; where the machine does
    not allow it, the test is skipped with the reason."""

    def __init__(self, path: Path, size: str):
        self.path, self.size = path, size

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)],
                             capture_output=True, text=True)
        if res.returncode:
            pytest.skip(f"cannot mount a {self.size} tmpfs here ({res.stderr.strip() or res.returncode}): a real full "
                        "disk needs root")
        return self.path

    def resize(self, size: str, read_only: bool = False) -> None:
        """Grow (room again) or shrink it, or make it read-only, keeping what it holds."""
        opts = f"remount,size={size}" + (",ro" if read_only else ",rw")
        subprocess.run(["mount", "-o", opts, str(self.path)], check=True, capture_output=True)

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def files_under(folder: Path) -> list[str]:
    """Every file below a folder, as relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
