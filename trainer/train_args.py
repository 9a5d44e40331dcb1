"""train_cls.py's and train_kd.py's command line, generated from TrainConfig's declared options, and the --config
file (a run's config.json, or a YAML/JSON file of the same options) whose values become its defaults."""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Optional, Sequence

from .argparsing import OneLineParser
from .config import Opt, TrainConfig, flag, validate
from .errors import UsageError, first_line
from .recipes import RECIPES


def build_parser(kd: bool = False, prog: Optional[str] = None, teacher_given: bool = False) -> OneLineParser:
    """The command line of train_cls.py (and of train_kd.py with kd=True), generated from TrainConfig."""
    p = OneLineParser(prog=prog, description=(
        "Distill a timm ViT student from a trained teacher" if kd else "Train or fine-tune a timm ViT")
        + " on an image-classification dataset, through Hugging Face Accelerate.")
    p.add_argument("--config", metavar="FILE", help="a run's config.json (or its folder), or a YAML/JSON file of these "
                   "options by their field names: its values become the defaults, flags given here override them")
    groups: dict[str, Any] = {}
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        o: Opt = f.metadata["opt"]
        if o.kd_only and not kd:
            continue
        g = groups.get(o.group) or groups.setdefault(o.group, p.add_argument_group(o.group))
        default = getattr(defaults, f.name)
        if isinstance(default, bool):  # --NAME and --no-NAME: a preset or a --config file may have set either
            g.add_argument(flag(f.name), dest=f.name, help=o.help, default=default,
                           action=argparse.BooleanOptionalAction)
            continue
        g.add_argument(flag(f.name), *o.aliases, dest=f.name, default=[] if o.nargs == "*" else default, help=o.help,
                       type=o.parse or type(default), choices=o.choices, metavar=o.metavar, nargs=o.nargs,
                       **({"required": True} if o.required and kd and not teacher_given else {}))
    return p


def config_file_values(path: str, kd: bool) -> dict[str, Any]:
    """The options a --config file gives: a run's config.json (its training arguments, less what only that
    invocation meant: resume, overwrite), or a YAML/JSON mapping of TrainConfig field names."""
    import yaml  # comes with datasets; only --config needs it

    path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(path) as f:
            values = yaml.safe_load(f)  # JSON is YAML
    except OSError as err:
        raise UsageError(f"--config {path} cannot be read ({err.strerror}): pass a run's config.json or a YAML "
                         "file") from None
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path} does not parse ({first_line(err, 120)}): fix it, or pass a run's "
                         "config.json") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path} is not a mapping of options: write one option per line, as `lr: 0.001`")
    if isinstance(values.get("training_args"), dict):  # a run folder's config.json
        values = {k: v for k, v in values["training_args"].items() if k not in ("resume_from", "overwrite")}
    fields = {f.name: f.metadata["opt"] for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in values if k.replace("-", "_") not in fields)
    if unknown:
        raise UsageError(f"--config {path} names unknown options {unknown[:5]}: use the field names of "
                         f"`{'train_kd.py' if kd else 'train_cls.py'} --help` with _ for -, e.g. lr, batch_size")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    if not kd:
        if values.get("teacher"):
            raise UsageError(f"--config {path} is a distillation run's (teacher {values['teacher']}): use train_kd.py")
        values = {k: v for k, v in values.items() if not fields[k].kd_only}
    return values


def parse_args(argv: Optional[Sequence[str]] = None, kd: bool = False, prog: Optional[str] = None) -> TrainConfig:
    """Parse a command line (with the defaults of its --config file, if any) into a checked TrainConfig."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    early.add_argument("--recipe")
    known = early.parse_known_args(argv)[0]
    file_values = config_file_values(known.config, kd) if known.config else {}
    # A file's values, then the preset's, then the flags: each later one wins.
    preset = RECIPES[known.recipe].values if known.recipe in RECIPES else {}
    parser = build_parser(kd=kd, prog=prog, teacher_given=bool(file_values.get("teacher")))
    parser.set_defaults(**{**file_values, **preset})
    values = vars(parser.parse_args(argv))
    values.pop("config")
    for f in dataclasses.fields(TrainConfig):
        after = f.metadata["opt"].after
        if after is not None and f.name in values and not isinstance(values[f.name], dict):
            values[f.name] = after(values[f.name])
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg
