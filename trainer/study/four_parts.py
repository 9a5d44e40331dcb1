"""The four-part study in one command: six runs, the throughput of both models, a report with plots.

    python -m trainer.study --preset hw2 --output-dir runs/hw2      # the real study (GPU)
    python -m trainer.study --preset demo --output-dir runs/demo    # the same, shrunk for 2 CPU cores

Every run is a TrainConfig handed to trainer.api.train, as a user's own Python would do it.
A run already complete in the output folder is not repeated, so an interrupted study continues.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from datasets import DatasetDict

from ..api import TrainConfig, train
from ..argparsing import OneLineParser
from ..benchmark import cpu_latency_ms, ort_seconds, throughput
from ..data import open_dataset
from ..distributed import end_processes
from ..errors import UsageError, exit_on_usage_error
from ..evaluate import evaluate_checkpoint
from ..export import export_run, ort_session, previous_export
from ..models import load_run, run_view
from ..resume import list_checkpoints
from ..run_folder import MODEL_FILE, SUMMARY_FILE
from .estimate import estimate_line
from .presets import Preset, demo_preset, hw2_preset
from .report import write_report
from .study_data import build_digits, build_standin

ONNX_CHECK_IMAGES = 1000  # ONNX Runtime runs on the CPU: the int8 top-1 of a 224-px vit_base on 10,000 images takes long
RUNS = ("part1_base_scratch", "part2_base_pretrained", "part3_tiny_pretrained", "part4_tiny_distilled",
        "part4_tiny_feature", "part4_tiny_scratch")
DISTILLED = {"part4_tiny_distilled": "soft", "part4_tiny_feature": "feature"}  # run -> --kd-type, at the same budget


@dataclass
class StudyArgs:
    """The study's command line."""

    preset: str
    output_dir: str
    dataset: Optional[str] = None
    pretrained_base_file: Optional[str] = None
    pretrained_tiny_file: Optional[str] = None
    stand_in: bool = False
    epochs: Optional[int] = None
    samples_per_class: Optional[int] = None
    batch_size: Optional[int] = None
    standin_epochs: Optional[int] = None
    standin_per_class: Optional[int] = None
    device: Optional[str] = None
    cache_dir: Optional[str] = None
    seed: int = 42
    no_progress: bool = False
    estimate_only: bool = False


def run_config(p: Preset, args: StudyArgs, run: str, model: str, kwargs: dict[str, Any],
               lr: Optional[float] = None, **changes: Any) -> TrainConfig:
    """The arguments every run of the study shares, for one model; `changes` override them."""
    cfg = TrainConfig(dataset=p.dataset, samples_per_class=p.samples_per_class, epochs=p.epochs,
                      batch_size=p.batch_size, lr=lr or p.lr, seed=args.seed,
                      output_dir=os.path.join(args.output_dir, run), checkpoint_every="epoch", keep_checkpoints=1,
                      eval_every=p.eval_every, eval_samples_per_class=p.eval_samples_per_class, img_size=p.img_size,
                      mixed_precision=p.mixed_precision, cache_dir=args.cache_dir, progress=not args.no_progress,
                      model=model, model_kwargs=dict(kwargs))
    return dataclasses.replace(cfg, **changes)


def train_once(cfg: TrainConfig) -> dict[str, Any]:
    """A run that is complete is read back; one cut off (SIGTERM, a lost machine) continues from its newest whole
    checkpoint (--resume-from auto); otherwise it starts afresh."""
    summary_path = os.path.join(cfg.output_dir, SUMMARY_FILE)
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            return json.load(f)
    continued = bool(list_checkpoints(cfg.output_dir))
    # The study owns its folders: without a checkpoint, whatever a cut-off run left there is replaced.
    cfg = dataclasses.replace(cfg, resume_from="auto", overwrite=not continued)
    print(f"study: {os.path.basename(cfg.output_dir)}: {cfg.model} {cfg.model_kwargs or ''}, "
          f"{'continued' if continued else 'started'}", flush=True)
    summary = train(cfg)
    # The resumable state only matters until the run is complete; it is several times the model's size.
    shutil.rmtree(os.path.join(cfg.output_dir, "checkpoints"), ignore_errors=True)
    return summary


def pretrained_source(kind: str, p: Preset, args: StudyArgs) -> tuple[str, str]:
    """(weights file or "" for the hub, the words the report uses for them): never a silent substitute."""
    given = args.pretrained_base_file if kind == "base" else args.pretrained_tiny_file
    if given:
        return given, f"file {given}"
    model, kwargs = (p.base_model, p.base_kwargs) if kind == "base" else (p.tiny_model, p.tiny_kwargs)
    if not args.stand_in:
        return "", f"timm hub weights ({model})"
    data = build_standin(p.dataset, os.path.join(args.output_dir, "standin_data"), p.samples_per_class, args.seed)
    train_once(run_config(p, args, f"standin_{kind}", model, kwargs, p.base_lr if kind == "base" else None,
                          dataset=data, samples_per_class=p.standin_per_class, epochs=p.standin_epochs, eval_every=0,
                          eval_samples_per_class=None))
    return (os.path.join(args.output_dir, f"standin_{kind}", MODEL_FILE),
            f"STAND-IN, not ImageNet: pretrained here for {p.standin_epochs} epochs on a 20-class "
            "class-x-rotation task built from the training images the study does not fine-tune on")


def _preset(args: StudyArgs) -> Preset:
    if args.preset == "demo":
        os.makedirs(args.output_dir, exist_ok=True)
        p = demo_preset(build_digits(os.path.join(args.output_dir, "data")))
        args.stand_in = True
    else:
        p = hw2_preset()
        p.dataset = args.dataset or p.dataset
        open_dataset(p.dataset)  # without data no part can run: fail now, with one line, rather than six times
        os.makedirs(args.output_dir, exist_ok=True)
    for name in ("epochs", "samples_per_class", "batch_size", "standin_epochs", "standin_per_class"):
        if getattr(args, name):
            setattr(p, name, getattr(args, name))
    return p


def announce(p: Preset, args: StudyArgs) -> None:
    """Before a fresh study's first run: one line with its estimated time here (and where the demo is)."""
    if _finished(args.output_dir, *RUNS) is not None and not args.estimate_only:
        return
    data = open_dataset(p.dataset)
    num_eval = len(data["test"]) if isinstance(data, DatasetDict) and "test" in data else 10_000
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(estimate_line(p, args.preset, device, 10, num_eval, args.stand_in and not (
        args.pretrained_base_file and args.pretrained_tiny_file)), flush=True)


def run_study(args: StudyArgs) -> dict[str, Any]:
    """Run (or continue) the six runs and the throughput benchmark, then write the report."""
    p = _preset(args)
    announce(p, args)
    if args.estimate_only:
        return {}
    started = time.perf_counter()
    inits: dict[str, str] = {"part1_base_scratch": "scratch", "part4_tiny_scratch": "scratch"}
    notes: list[str] = []
    done: dict[str, dict[str, Any]] = {}

    def attempt(run: str, cfg: TrainConfig) -> None:
        try:
            done[run] = train_once(cfg)
        except UsageError as err:
            notes.append(f"{run}: not run: {err}")
            print(f"study: {run} not run: {err}", flush=True)

    def pretrained(kind: str, run: str, model: str, kwargs: dict[str, Any], lr: Optional[float] = None,
                   **changes: Any) -> TrainConfig:
        weights, inits[run] = pretrained_source(kind, p, args)
        return run_config(p, args, run, model, kwargs, lr, pretrained=not weights, pretrained_file=weights or None,
                          **changes)

    attempt("part1_base_scratch", run_config(p, args, "part1_base_scratch", p.base_model, p.base_kwargs, p.base_lr))
    attempt("part2_base_pretrained", pretrained("base", "part2_base_pretrained", p.base_model, p.base_kwargs,
                                                p.base_lr))
    attempt("part3_tiny_pretrained", pretrained("tiny", "part3_tiny_pretrained", p.tiny_model, p.tiny_kwargs))
    for run, kd_type in DISTILLED.items():  # vit_tiny has no distillation token: token KD is benchmarks/kd.py's
        if "part2_base_pretrained" in done:
            attempt(run, pretrained("tiny", run, p.tiny_model, p.tiny_kwargs, teacher_cache=p.teacher_cache,
                                    kd_type=kd_type, teacher=os.path.join(args.output_dir, "part2_base_pretrained")))
        else:
            inits[run] = inits["part3_tiny_pretrained"]
            notes.append(f"{run}: not run: its teacher (part 2) is missing")
    attempt("part4_tiny_scratch", run_config(p, args, "part4_tiny_scratch", p.tiny_model, p.tiny_kwargs))
    study = {"preset": args.preset, "description": p.description, "settings": dataclasses.asdict(p),
             "inits": {run: inits[run] for run in RUNS}, "notes": notes,
             "throughput": measure_throughput(args.output_dir, p, args.device, args.cache_dir, notes),
             "agreement_with_teacher": teacher_agreement(args.output_dir, args.cache_dir, p.mixed_precision),
             "study_wall_s": round(time.perf_counter() - started, 1), "device": _device_words()}
    with open(os.path.join(args.output_dir, "study.json"), "w") as f:
        json.dump(study, f, indent=2)
    print(f"study: wrote {write_report(args.output_dir)}", flush=True)
    return study


def _device_words() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    return f"CPU: {os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}"


def _finished(out_dir: str, *runs: str) -> Optional[str]:
    """The first of the runs that finished, as a folder."""
    return next((os.path.join(out_dir, r) for r in runs if os.path.exists(os.path.join(out_dir, r, SUMMARY_FILE))),
                None)


def measure_throughput(out_dir: str, p: Preset, device: Optional[str], cache_dir: Optional[str] = None,
                       notes: Optional[list[str]] = None) -> dict[str, Any]:
    """Test-time images/s of the part-2 (base) and part-3 (tiny) models, their batch-1 CPU latency, and, with the
    [deploy] extra, the same through ONNX Runtime in fp32 and int8 with the int8 model's top-1."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = {}
    for key, runs in (("base", ("part2_base_pretrained", "part1_base_scratch")),
                      ("tiny", ("part3_tiny_pretrained", "part4_tiny_scratch"))):
        folder = _finished(out_dir, *runs)
        if folder is None:
            continue
        model, cfg = load_run(folder)
        size = run_view(cfg).size
        res = throughput(model, size, p.bench_batch_size, dev, p.bench_precision, warmup=3, iters=10)
        res.update(device=dev.type, precision=p.bench_precision, run=os.path.basename(folder),
                   cpu_latency_ms_bs1=cpu_latency_ms(model, size, warmup=2, iters=10))
        try:
            res.update(onnx_figures(folder, size, cache_dir))
        except UsageError as err:  # the [deploy] extra is missing: the study goes on without these figures
            if notes is not None and str(err) not in notes:
                notes.append(f"ONNX Runtime figures not measured: {err}")
        out[key] = res
    return out


def onnx_figures(folder: str, size: int, cache_dir: Optional[str]) -> dict[str, Any]:
    """A run exported (RUN/model.onnx, RUN/model.int8.onnx): ONNX Runtime batch-1 CPU latency in fp32 and int8,
    and top-1 of PyTorch and of the int8 model on up to ONNX_CHECK_IMAGES of the run's eval images."""
    parity = previous_export(folder) or export_run(folder, int8=True, cache_dir=cache_dir, max_samples=ONNX_CHECK_IMAGES)
    latency = {name: ort_seconds(ort_session(parity[key], torch.get_num_threads()), size, 1, 2, 10) * 1e3
               for name, key in (("fp32", "onnx"), ("int8", "onnx_int8"))}
    return {"ort_fp32_latency_ms_bs1": latency["fp32"], "ort_int8_latency_ms_bs1": latency["int8"],
            "onnx_check_images": parity["num_samples"], "top1_torch": parity["top1_torch"],
            "top1_onnx": parity["top1_onnx"], "top1_int8": parity["top1_int8"], "onnx_agreement": parity["agreement"]}


def teacher_agreement(out_dir: str, cache_dir: Optional[str], mixed_precision: Optional[str] = None) -> dict[str, float]:
    """How often each vit_tiny run predicts what the part-2 teacher predicts on the eval set."""
    teacher = _finished(out_dir, "part2_base_pretrained")
    if teacher is None:
        return {}
    # The runs' own precision: their evals used it, and the teacher's saved predictions then apply.
    return {run: evaluate_checkpoint(folder, compare_with=teacher, mixed_precision=mixed_precision,
                                     cache_dir=cache_dir)["agreement"]
            for run in ("part3_tiny_pretrained", *DISTILLED, "part4_tiny_scratch")
            if (folder := _finished(out_dir, run)) is not None}


def build_parser() -> OneLineParser:
    """The command line of trainer.study."""
    p = OneLineParser(prog="python -m trainer.study", description=__doc__)
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
    p.add_argument("--estimate-only", action="store_true", help="print the estimated time of the study here and stop")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run the study named by --preset."""
    args = StudyArgs(**vars(build_parser().parse_args(argv)))
    if os.path.isfile(args.output_dir):
        raise UsageError(f"--output-dir {args.output_dir} is a file: pass a folder")
    study = run_study(args)
    end_processes()
    return study
