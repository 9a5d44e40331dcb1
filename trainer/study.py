"""The four-part study in one command: five runs, the throughput of both models, a report with plots.

    python -m trainer.study --preset hw2 --output-dir runs/hw2      # the real study (GPU)
    python -m trainer.study --preset demo --output-dir runs/demo    # the same, shrunk for 2 CPU cores

Every run goes through the same entry points as `accelerate launch train_cls.py` / `train_kd.py`.
A run already complete in the output folder is not repeated, so an interrupted study continues.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from .config import _DefaultsFormatter, _OneLineParser
from .errors import UsageError, exit_on_usage_error


@dataclass
class Preset:
    """Everything that differs between the real study and its CPU-sized demo."""

    dataset: str
    samples_per_class: int
    eval_samples_per_class: Optional[int]
    epochs: int
    batch_size: int
    lr: float  # the tiny model's; the base model uses base_lr
    base_model: str
    tiny_model: str
    img_size: Optional[int] = None
    base_lr: Optional[float] = None
    base_kwargs: list[str] = field(default_factory=list)
    tiny_kwargs: list[str] = field(default_factory=list)
    mixed_precision: Optional[str] = None
    eval_every: int = 0
    bench_batch_size: int = 256
    bench_precision: str = "fp32"
    standin_epochs: int = 3
    standin_per_class: int = 60
    kd_extra: list[str] = field(default_factory=lambda: ["--teacher-cache"])
    description: str = ""


def hw2_preset() -> Preset:
    """CIFAR-10, 1,000 per class, 5 epochs, 224x224, the mission's models, mixed precision on a GPU."""
    import torch

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return Preset(dataset="uoft-cs/cifar10", samples_per_class=1000, eval_samples_per_class=None, epochs=5,
                  batch_size=64, lr=1e-4, base_model="vit_base_patch16_224", tiny_model="vit_tiny_patch16_224",
                  mixed_precision=("bf16" if bf16 else "fp16") if torch.cuda.is_available() else "no",
                  eval_every=50, bench_precision="bf16" if bf16 else ("fp16" if torch.cuda.is_available() else "fp32"),
                  standin_epochs=2, standin_per_class=1000,
                  description="CIFAR-10, 1,000 training images per class, 5 epochs, 224x224")


def demo_preset(data_dir: str) -> Preset:
    """scikit-learn's digits as 32x32 RGB, small ViTs of the same family, minutes on 2 CPU cores."""
    return Preset(dataset=data_dir, samples_per_class=60, eval_samples_per_class=None, epochs=5, batch_size=32,
                  lr=1e-3, base_lr=3e-4, base_model="vit_base_patch16_224", tiny_model="vit_tiny_patch16_224", img_size=32,
                  base_kwargs=["patch_size=8", "depth=2"], tiny_kwargs=["patch_size=8", "depth=2"],
                  mixed_precision="no", eval_every=10, bench_batch_size=64, bench_precision="fp32",
                  standin_epochs=4, standin_per_class=60,
                  description="scikit-learn digits (8x8 upscaled to 32x32 RGB), 60 training images per class, "
                              "5 epochs; ViT-B and ViT-Ti widths at depth 2, patch 8")


# ---------------------------------------------------------------- datasets the study builds for itself

def build_digits(path: str, seed: int = 0) -> str:
    """scikit-learn's digits as a save_to_disk DatasetDict: 32x32 RGB images, train/test (3:1 per class)."""
    import datasets
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        return path
    digits = load_digits()
    rng = np.random.default_rng(seed)
    test = np.zeros(len(digits.target), dtype=bool)
    for k in range(10):
        rows = rng.permutation(np.flatnonzero(digits.target == k))
        test[rows[: len(rows) // 4]] = True
    images = [Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((32, 32), Image.BICUBIC).convert("RGB")
              for img in digits.images]
    names = [str(k) for k in range(10)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split, mask in (("train", ~test), ("test", test)):
        idx = np.flatnonzero(mask)
        splits[split] = datasets.Dataset.from_dict(
            {"image": [images[i] for i in idx], "label": digits.target[idx].tolist()}, features=features)
    tmp = f"{path}.tmp"
    datasets.DatasetDict(splits).save_to_disk(tmp)
    os.replace(tmp, path)
    return path


def build_standin(source: str, path: str, exclude_per_class: int, seed: int) -> str:
    """A stand-in pretraining set: the train images the study does NOT fine-tune on, each as itself and
    rotated by 90 degrees, labelled class x rotation (2K classes), so the fine-tune still swaps the head."""
    import datasets
    import numpy as np

    from .data import find_columns, get_split, open_dataset, select_per_class

    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        return path
    train = get_split(open_dataset(source), "train", "--train-split")
    img_col, lbl_col = find_columns(train.features)
    labels = np.asarray(train[lbl_col], dtype=np.int64)
    names = list(train.features[lbl_col].names)
    chosen = set(select_per_class(labels, exclude_per_class, seed, names).tolist())
    rest = np.array([i for i in range(len(labels)) if i not in chosen])
    sub = train.select(rest.tolist())
    new_names = [f"{n}/{r}" for n in names for r in ("0", "90")]

    def rotate(batch):
        images, out_labels = [], []
        for im, y in zip(batch[img_col], batch[lbl_col], strict=True):
            images += [im, im.rotate(90)]
            out_labels += [2 * y, 2 * y + 1]
        return {"image": images, "label": out_labels}

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=new_names)})
    rotated = sub.map(rotate, batched=True, remove_columns=sub.column_names, features=features)
    split = rotated.train_test_split(test_size=min(0.1, 2000 / max(len(rotated), 1)), seed=seed,
                                     stratify_by_column="label")
    tmp = f"{path}.tmp"
    split.save_to_disk(tmp)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- the runs

RUNS = ("part1_base_scratch", "part2_base_pretrained", "part3_tiny_pretrained", "part4_tiny_distilled",
        "part4_tiny_scratch")


def _run_args(p: Preset, out: str, cache_dir: Optional[str], seed: int, dataset: Optional[str] = None,
              per_class: Optional[int] = None, epochs: Optional[int] = None) -> list[str]:
    """Flags every run of the study shares; the stand-in pretraining overrides data and length."""
    args = ["--dataset", dataset or p.dataset, "--samples-per-class", str(per_class or p.samples_per_class),
            "--epochs", str(epochs or p.epochs), "--batch-size", str(p.batch_size), "--lr", str(p.lr),
            "--seed", str(seed), "--output-dir", out, "--checkpoint-every", "epoch", "--keep-checkpoints", "1"]
    if p.eval_every and dataset is None:
        args += ["--eval-every", str(p.eval_every)]
    if p.eval_samples_per_class and dataset is None:
        args += ["--eval-samples-per-class", str(p.eval_samples_per_class)]
    if p.img_size:
        args += ["--img-size", str(p.img_size)]
    if p.mixed_precision:
        args += ["--mixed-precision", p.mixed_precision]
    if cache_dir:
        args += ["--cache-dir", cache_dir]
    return args


def _model(name: str, kwargs: list[str], lr: Optional[float] = None) -> list[str]:
    # argparse keeps the last --lr, so a model's own rate overrides the common one.
    return ["--model", name] + (["--model-kwargs", *kwargs] if kwargs else []) + (["--lr", str(lr)] if lr else [])


def _launch(script: str, argv: list[str], out: str, progress: bool) -> dict:
    """One run through train_cls.py / train_kd.py's own entry point; continue or restart a partial one."""
    from .cli import main_cls, main_kd
    from .resume import list_checkpoints

    summary_path = os.path.join(out, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            return json.load(f)
    if list_checkpoints(out):
        argv = argv + ["--resume-from", "latest"]
    elif os.path.isdir(out):
        argv = argv + ["--overwrite"]
    if not progress:
        argv = argv + ["--no-progress"]
    print(f"study: {script} {' '.join(argv)}", flush=True)
    try:
        summary = (main_cls if script == "train_cls.py" else main_kd)(argv)
    except SystemExit as stop:
        raise UsageError(f"the study's run {os.path.basename(out)} stopped (exit code {stop.code}): see the "
                         "line above; fix it and run the study again, finished runs are kept") from None
    # The resumable state only matters until the run is complete; it is several times the model's size.
    shutil.rmtree(os.path.join(out, "checkpoints"), ignore_errors=True)
    return summary


def _pretrained_source(kind: str, model: str, p: Preset, args, out_dir: str, cache_dir: Optional[str],
                       kwargs: list[str], progress: bool) -> tuple[list[str], str]:
    """Flags for 'pretrained' and the words the report uses for them; never a silent substitute."""
    given = getattr(args, f"pretrained_{kind}_file")
    if given:
        return ["--pretrained-file", given], f"file {given}"
    if args.stand_in:
        data = build_standin(p.dataset, os.path.join(out_dir, "standin_data"), p.samples_per_class, args.seed)
        run = os.path.join(out_dir, f"standin_{kind}")
        _launch("train_cls.py", [*_run_args(p, run, cache_dir, args.seed, data, p.standin_per_class, p.standin_epochs),
                                 *_model(model, kwargs, p.base_lr if kind == "base" else None)], run, progress)
        return (["--pretrained-file", os.path.join(run, "model.safetensors")],
                f"STAND-IN, not ImageNet: pretrained here for {p.standin_epochs} epochs on a 20-class "
                "class-x-rotation task built from the training images the study does not fine-tune on")
    return ["--pretrained"], f"timm hub weights ({model})"


def run_study(preset: str, out_dir: str, args) -> dict:
    """Run (or continue) the five runs and the throughput benchmark, then write the report."""
    from .data import open_dataset
    from .report import write_report

    cache_dir = args.cache_dir
    if preset == "demo":
        os.makedirs(out_dir, exist_ok=True)
        p = demo_preset(build_digits(os.path.join(out_dir, "data")))
        args.stand_in = True
    else:
        p = hw2_preset()
        if args.dataset:
            p.dataset = args.dataset
        open_dataset(p.dataset)  # without data no part can run: fail now, with one line, rather than five times
        os.makedirs(out_dir, exist_ok=True)
    for name in ("epochs", "samples_per_class", "batch_size", "standin_epochs", "standin_per_class"):
        if getattr(args, name, None):
            setattr(p, name, getattr(args, name))
    progress = not args.no_progress
    common = lambda run: _run_args(p, os.path.join(out_dir, run), cache_dir, args.seed)  # noqa: E731
    base, tiny = _model(p.base_model, p.base_kwargs, p.base_lr), _model(p.tiny_model, p.tiny_kwargs)
    inits, notes = {}, []
    started = time.perf_counter()

    def attempt(run: str, script: str, argv: list[str]) -> Optional[dict]:
        try:
            return _launch(script, argv, os.path.join(out_dir, run), progress)
        except UsageError as err:
            notes.append(f"{run}: not run: {err}")
            print(f"study: {run} not run: {err}", flush=True)
            return None

    attempt("part1_base_scratch", "train_cls.py", [*common("part1_base_scratch"), *base])
    inits["part1_base_scratch"] = "scratch"
    base_flags, inits["part2_base_pretrained"] = _pretrained_source(
        "base", p.base_model, p, args, out_dir, cache_dir, p.base_kwargs, progress)
    part2 = attempt("part2_base_pretrained", "train_cls.py", [*common("part2_base_pretrained"), *base, *base_flags])
    tiny_flags, tiny_init = _pretrained_source("tiny", p.tiny_model, p, args, out_dir, cache_dir, p.tiny_kwargs,
                                               progress)
    inits["part3_tiny_pretrained"] = inits["part4_tiny_distilled"] = tiny_init
    attempt("part3_tiny_pretrained", "train_cls.py", [*common("part3_tiny_pretrained"), *tiny, *tiny_flags])
    if part2 is not None:
        attempt("part4_tiny_distilled", "train_kd.py",
                [*common("part4_tiny_distilled"), *tiny, *tiny_flags, "--teacher",
                 os.path.join(out_dir, "part2_base_pretrained"), *p.kd_extra])
    else:
        notes.append("part4_tiny_distilled: not run: its teacher (part 2) is missing")
    attempt("part4_tiny_scratch", "train_cls.py", [*common("part4_tiny_scratch"), *tiny])
    inits["part4_tiny_scratch"] = "scratch"
    throughput = measure_throughput(out_dir, p, args.device)
    agreement = teacher_agreement(out_dir, cache_dir, p.mixed_precision)
    study = {"preset": preset, "description": p.description, "settings": asdict(p), "inits": inits, "notes": notes,
             "throughput": throughput, "agreement_with_teacher": agreement,
             "study_wall_s": round(time.perf_counter() - started, 1), "device": _device_words()}
    with open(os.path.join(out_dir, "study.json"), "w") as f:
        json.dump(study, f, indent=2)
    report = write_report(out_dir)
    print(f"study: wrote {report}", flush=True)
    return study


def _device_words() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    return f"CPU: {os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}"


def measure_throughput(out_dir: str, p: Preset, device: Optional[str]) -> dict:
    """Test-time images/s of the part-2 (base) and part-3 (tiny) models, and their batch-1 CPU latency."""
    import torch

    from .benchmark import cpu_latency_ms, throughput
    from .models import load_run, run_view

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = {}
    for key, run in (("base", "part2_base_pretrained"), ("tiny", "part3_tiny_pretrained")):
        folder = os.path.join(out_dir, run)
        if not os.path.exists(os.path.join(folder, "summary.json")):
            folder = os.path.join(out_dir, "part1_base_scratch" if key == "base" else "part4_tiny_scratch")
        if not os.path.exists(os.path.join(folder, "summary.json")):
            continue
        model, cfg = load_run(folder)
        size = run_view(cfg).size
        res = throughput(model, size, p.bench_batch_size, dev, p.bench_precision, warmup=3, iters=10)
        res.update(device=dev.type, precision=p.bench_precision, run=os.path.basename(folder),
                   cpu_latency_ms_bs1=cpu_latency_ms(model, size, warmup=2, iters=10))
        out[key] = res
    return out


def teacher_agreement(out_dir: str, cache_dir: Optional[str], mixed_precision: Optional[str] = None) -> dict:
    """How often each vit_tiny run predicts what the part-2 teacher predicts on the eval set."""
    from .evaluate import main as evaluate_main

    teacher = os.path.join(out_dir, "part2_base_pretrained")
    if not os.path.exists(os.path.join(teacher, "summary.json")):
        return {}
    out = {}
    for run in ("part3_tiny_pretrained", "part4_tiny_distilled", "part4_tiny_scratch"):
        folder = os.path.join(out_dir, run)
        if os.path.exists(os.path.join(folder, "summary.json")):
            # The runs' own precision: their evals used it, and the teacher's saved predictions then apply.
            argv = ["--checkpoint", folder, "--compare-with", teacher,
                    *(["--mixed-precision", mixed_precision] if mixed_precision else [])]
            out[run] = evaluate_main(argv + (["--cache-dir", cache_dir] if cache_dir else []))["agreement"]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line of trainer.study."""
    p = _OneLineParser(prog="python -m trainer.study", description=__doc__, formatter_class=_DefaultsFormatter)
    p.add_argument("--preset", choices=["hw2", "demo"], required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--dataset", default=None, help="hw2: a local CIFAR-10 copy instead of the hub id")
    p.add_argument("--pretrained-base-file", default=None, help="local weights for the base model")
    p.add_argument("--pretrained-tiny-file", default=None, help="local weights for the tiny model")
    p.add_argument("--stand-in", action="store_true",
                   help="where no weights are given, pretrain labelled stand-ins here instead of using the hub")
    p.add_argument("--epochs", type=int, default=None, help="override the preset")
    p.add_argument("--samples-per-class", type=int, default=None, help="override the preset")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset")
    p.add_argument("--standin-epochs", type=int, default=None, help="override the preset's stand-in pretraining")
    p.add_argument("--standin-per-class", type=int, default=None, help="override the preset's stand-in pretraining")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="throughput device")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-progress", action="store_true")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the study named by --preset."""
    args = build_parser().parse_args(argv)
    if os.path.isfile(args.output_dir):
        raise UsageError(f"--output-dir {args.output_dir} is a file: pass a folder")
    return run_study(args.preset, args.output_dir, args)


if __name__ == "__main__":
    main()
