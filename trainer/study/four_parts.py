"""The four-part study: six runs, the throughput of both models, a report with plots (`python -m trainer.study`).

Every run is a TrainConfig handed to trainer.api.train, as a user's own Python would do it.
A run already complete in the output folder is not repeated, so an interrupted study continues.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
from datasets import DatasetDict

from ..api import TrainConfig, train
from ..data.loading import default_cache_dir
from ..data.sources import open_dataset
from ..errors import UsageError
from ..model_card import write_card
from ..models import check_weights_file, probe_model
from ..run_files import MODEL_FILE, write_json
from ..run_records import RunSummary
from ..training.checkpoints import list_checkpoints
from .estimate import estimate_line
from .measure import DISTILLED, RUNS, device_words, first_finished, measure_throughput, teacher_agreement
from .presets import Preset, demo_preset, hw2_preset
from .report_writer import write_report
from .study_data import build_digits, build_standin



OVERRIDES = ("epochs", "samples_per_class", "batch_size", "eval_samples_per_class", "standin_epochs",
             "standin_per_class")  # of the preset


@dataclass
class StudyArgs:
    """The study's command line."""

    preset: str
    output_dir: Optional[str] = None  # None only with estimate_only
    dataset: Optional[str] = None
    pretrained_base_file: Optional[str] = None
    pretrained_tiny_file: Optional[str] = None
    stand_in: bool = False
    epochs: Optional[int] = None
    samples_per_class: Optional[int] = None
    batch_size: Optional[int] = None
    eval_samples_per_class: Optional[int] = None
    standin_epochs: Optional[int] = None
    standin_per_class: Optional[int] = None
    device: Optional[str] = None
    cache_dir: Optional[str] = None
    seed: int = 42
    no_progress: bool = False
    estimate_only: bool = False

    @property
    def folder(self) -> str:
        """The study's folder (every study that runs has one)."""
        assert self.output_dir is not None, "--output-dir"
        return self.output_dir


def part_config(p: Preset, args: StudyArgs, run: str, model: str, kwargs: dict[str, Any],
               lr: Optional[float] = None, **changes: Any) -> TrainConfig:
    """The arguments every run of the study shares, for one model; `changes` override them."""
    cfg = TrainConfig(dataset=p.dataset, samples_per_class=p.samples_per_class, epochs=p.epochs,
                      batch_size=p.batch_size, lr=lr or p.lr, seed=args.seed,
                      output_dir=os.path.join(args.folder, run), checkpoint_every="epoch", keep_checkpoints=1,
                      eval_every=p.eval_every, eval_samples_per_class=p.eval_samples_per_class, img_size=p.img_size,
                      mixed_precision=p.mixed_precision, cache_dir=args.cache_dir, progress=not args.no_progress,
                      model=model, model_kwargs=dict(kwargs))
    return dataclasses.replace(cfg, **changes)


def train_once(cfg: TrainConfig) -> RunSummary:
    """A run that is complete is read back; one cut off (SIGTERM, a lost machine) continues from its newest whole
    checkpoint (--resume-from auto); otherwise it starts afresh."""
    finished = RunSummary.read(cfg.output_dir)
    if finished is not None:
        return finished
    continued = bool(list_checkpoints(cfg.output_dir))
    # The study owns its folders: without a checkpoint, whatever a cut-off run left there is replaced.
    cfg = dataclasses.replace(cfg, resume_from="auto", overwrite=not continued)
    print(f"study: {os.path.basename(cfg.output_dir)}: {cfg.model} {cfg.model_kwargs or ''}, "
          f"{'continued' if continued else 'started'}", flush=True)
    summary = RunSummary.from_json(train(cfg))
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
    data = build_standin(p.dataset, os.path.join(args.folder, "standin_data"), p.samples_per_class, args.seed)
    train_once(part_config(p, args, f"standin_{kind}", model, kwargs, p.base_lr if kind == "base" else None,
                          dataset=data, samples_per_class=p.standin_per_class, epochs=p.standin_epochs, eval_every=0,
                          eval_samples_per_class=None))
    return (os.path.join(args.folder, f"standin_{kind}", MODEL_FILE),
            f"STAND-IN, not ImageNet: pretrained here for {p.standin_epochs} epochs on a 20-class "
            "class-x-rotation task built from the training images the study does not fine-tune on")


def _preset(args: StudyArgs) -> Preset:
    """The preset with the command line's overrides; its dataset is opened (hw2) or named, not built (demo)."""
    if args.preset == "demo":
        # An estimate without a study folder keeps the demo's digits with the decoded images.
        p = demo_preset(os.path.join(args.output_dir, "data") if args.output_dir else os.path.join(
            args.cache_dir or default_cache_dir(), "demo-digits"))
        args.stand_in = True
    else:
        p = hw2_preset()
        p.dataset = args.dataset or p.dataset
        open_dataset(p.dataset)  # without data no part can run: fail now, with one line, rather than six times
    for name in OVERRIDES:
        if getattr(args, name) is not None:
            setattr(p, name, getattr(args, name))
    return p


def check_sources(p: Preset, args: StudyArgs) -> None:
    """Before part 1's hours: the weight files given are readable, and where the hub must give weights, it does."""
    for kind, given, flag in (("base", args.pretrained_base_file, "--pretrained-base-file"),
                              ("tiny", args.pretrained_tiny_file, "--pretrained-tiny-file")):
        model, kwargs = (p.base_model, p.base_kwargs) if kind == "base" else (p.tiny_model, p.tiny_kwargs)
        if given:
            check_weights_file(model, given, {**kwargs, **({"img_size": p.img_size} if p.img_size else {})}, flag)
        elif not args.stand_in:
            try:
                probe_model(model, {**kwargs, **({"img_size": p.img_size} if p.img_size else {})}, pretrained=True)
            except UsageError as err:
                raise UsageError(f"the study's pretrained runs need ImageNet weights for {model}, and {err}".replace(
                    "pass --pretrained-file FILE", f"pass {flag} FILE, or --stand-in to pretrain a stand-in here"
                )) from None


def announce(p: Preset, args: StudyArgs) -> None:
    """Before a fresh study's first run: one line with its estimated time here (and where the demo is)."""
    if args.output_dir and first_finished(args.folder, *RUNS) is not None and not args.estimate_only:
        return
    data = open_dataset(p.dataset)
    num_eval = len(data["test"]) if isinstance(data, DatasetDict) and "test" in data else 10_000
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(estimate_line(p, args.preset, device, 10, num_eval, args.stand_in and not (
        args.pretrained_base_file and args.pretrained_tiny_file)), flush=True)


def run_study(args: StudyArgs) -> dict[str, Any]:
    """Run (or continue) the six runs and the throughput benchmark, then write the report."""
    for name in OVERRIDES:  # checked before anything is built or written
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    p = _preset(args)
    if not args.estimate_only:
        check_sources(p, args)  # before anything is written, let alone trained
    if args.preset == "demo":
        build_digits(p.dataset)
    announce(p, args)
    if args.estimate_only:
        return {}
    os.makedirs(args.folder, exist_ok=True)
    started = time.perf_counter()
    inits: dict[str, str] = {"part1_base_scratch": "scratch", "part4_tiny_scratch": "scratch"}
    notes: list[str] = []
    done: dict[str, RunSummary] = {}

    def attempt(run: str, cfg: TrainConfig) -> None:
        try:
            done[run] = train_once(cfg)
        except UsageError as err:
            notes.append(f"{run}: not run: {err}")
            print(f"study: {run} not run: {err}", flush=True)
            return
        if "STAND-IN" in inits.get(run, ""):  # the card says what its pretraining was, where it was not ImageNet
            write_card(cfg.output_dir, notes=[f"Its start is a stand-in, {inits[run].split(': ', 1)[-1]}, not ImageNet "
                                              "weights: it shows the mechanics, not what ImageNet pretraining is worth."])

    def pretrained(kind: str, run: str, model: str, kwargs: dict[str, Any], lr: Optional[float] = None,
                   **changes: Any) -> TrainConfig:
        weights, inits[run] = pretrained_source(kind, p, args)
        return part_config(p, args, run, model, kwargs, lr, pretrained=not weights, pretrained_file=weights or None,
                          **changes)

    attempt("part1_base_scratch", part_config(p, args, "part1_base_scratch", p.base_model, p.base_kwargs, p.base_lr))
    attempt("part2_base_pretrained", pretrained("base", "part2_base_pretrained", p.base_model, p.base_kwargs,
                                                p.base_lr))
    attempt("part3_tiny_pretrained", pretrained("tiny", "part3_tiny_pretrained", p.tiny_model, p.tiny_kwargs))
    for run, kd_type in DISTILLED.items():  # vit_tiny has no distillation token: token KD is benchmarks/kd.py's
        if "part2_base_pretrained" in done:
            attempt(run, pretrained("tiny", run, p.tiny_model, p.tiny_kwargs, teacher_cache=p.teacher_cache,
                                    kd_type=kd_type, teacher=os.path.join(args.folder, "part2_base_pretrained")))
        else:
            inits[run] = inits["part3_tiny_pretrained"]
            notes.append(f"{run}: not run: its teacher (part 2) is missing")
    attempt("part4_tiny_scratch", part_config(p, args, "part4_tiny_scratch", p.tiny_model, p.tiny_kwargs))
    measured = {"throughput": measure_throughput(args.folder, p, args.device, args.cache_dir, notes),
                "agreement_with_teacher": teacher_agreement(args.folder, args.cache_dir, p.mixed_precision)}
    # A continued study adds this session's time to the earlier sessions': the report gives the whole.
    earlier = _earlier_sessions(args.folder)
    study = {"preset": args.preset, "description": p.description, "settings": dataclasses.asdict(p),
             "inits": {run: inits[run] for run in RUNS}, "notes": notes, **measured,
             "study_wall_s": round(earlier[0] + time.perf_counter() - started, 1), "sessions": earlier[1] + 1,
             "device": device_words()}
    write_json(os.path.join(args.folder, "study.json"), study)
    print(f"study: wrote {write_report(args.folder)}", flush=True)
    return study


def _earlier_sessions(folder: str) -> tuple[float, int]:
    """(wall seconds, sessions) of the study.json an earlier session of this study wrote."""
    try:
        with open(os.path.join(folder, "study.json")) as f:
            earlier = json.load(f)
        return float(earlier.get("study_wall_s", 0.0)), int(earlier.get("sessions", 1))
    except (OSError, ValueError, TypeError):
        return 0.0, 0
