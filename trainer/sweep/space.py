"""A sweep's search space: the YAML/JSON file that maps each swept option to a range or a list of choices, checked
against the trainer's options, and each trial's values as command-line flags."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..config import TrainConfig
from ..errors import UsageError, first_line

RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Dimension:
    """One swept option: a range (low/high, optionally log or step) or a list of choices."""

    name: str  # the TrainConfig field (lr, kd_alpha)
    kind: str  # "int", "float" or "choices"
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: tuple[Any, ...] = ()

    @property
    def flag(self) -> str:
        """Its command-line flag (--kd-alpha)."""
        return "--" + self.name.replace("_", "-")

    def suggest(self, trial: Any) -> Any:
        """The trial's value, through Optuna's suggest API (a resumed trial gets the value it had)."""
        if self.kind == "choices":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low or 0), int(self.high or 0), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.name, float(self.low or 0), float(self.high or 0), step=self.step,
                                   log=self.log)

    def describe(self) -> dict[str, Any]:
        """As the study stores it: a second sweep on the study must have the same."""
        kept = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, (), False) or k == "name"}
        return json.loads(json.dumps(kept))  # as it comes back from the storage (lists, not tuples)


def read_space(path: str, kd: bool) -> list[Dimension]:
    """The space file parsed and checked: every key an option of train_cls.py (train_kd.py with kd), every range
    well formed; UsageError naming the entry and the fix."""
    import yaml  # comes with datasets

    try:
        with open(path) as f:
            text = f.read()
        # JSON through json: YAML 1.1 reads 1e-4 (no dot) as a string
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except OSError as err:
        raise UsageError(f"--space {path} cannot be read ({err.strerror}): pass a YAML or JSON file") from None
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise UsageError(f"--space {path} does not parse ({first_line(err, 120)}): fix it; for example "
                         '{"lr": {"low": 1e-4, "high": 1e-2, "log": true}}') from None
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"--space {path} is not a mapping of options to ranges: write e.g. "
                         '{"lr": {"low": 1e-4, "high": 1e-2, "log": true}, "kd_alpha": {"choices": [0.5, 0.9]}}')
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    script = "train_kd.py" if kd else "train_cls.py"
    dims = []
    for key, spec in raw.items():
        name = str(key).lstrip("-").replace("-", "_")
        field = fields.get(name)
        if field is None or (field.metadata["opt"].kd_only and not kd):
            raise UsageError(f"--space {path}: '{key}' is not an option of {script}: use a flag of `{script} --help` "
                             "without its dashes, e.g. lr, weight-decay")
        if name in ("output_dir", "resume_from", "teacher", "dataset"):
            raise UsageError(f"--space {path}: '{key}' cannot be swept: pass it after -- as a fixed argument")
        dims.append(_dimension(path, key, name, spec, field.default))
    return dims


def _dimension(path: str, key: str, name: str, spec: Any, default: Any) -> Dimension:
    where = f"--space {path}: '{key}'"
    if not isinstance(spec, dict):
        raise UsageError(f"{where} must be a mapping: {{\"low\": ..., \"high\": ...}} or {{\"choices\": [...]}}")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices or any(
                not isinstance(c, (bool, int, float, str)) for c in choices):
            raise UsageError(f"{where}: choices must be a non-empty list of numbers, strings or booleans, alone")
        return Dimension(name, "choices", choices=tuple(choices))
    unknown = set(spec) - RANGE_KEYS
    if unknown or not {"low", "high"} <= set(spec):
        raise UsageError(f"{where} takes low and high (with log or step), or choices; got {sorted(spec)}")
    low, high, log, step = (_number(spec["low"]), _number(spec["high"]), bool(spec.get("log", False)),
                            _number(spec.get("step")))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise UsageError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if low > high:
        raise UsageError(f"{where}: low {low} is above high {high}: swap them")
    if log and low <= 0:
        raise UsageError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0):
        raise UsageError(f"{where}: step must be a positive number, got {step!r}")
    if log and step is not None:
        raise UsageError(f"{where}: log and step do not go together (Optuna's rule): drop one")
    is_int = isinstance(default, int) and not isinstance(default, bool)
    if is_int and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise UsageError(f"{where} is a whole number: low, high and step must be integers")
    return Dimension(name, "int" if is_int else "float", low=low, high=high, log=log, step=step)


def _number(v: Any) -> Any:
    """A YAML string that is a number (1e-4) as the number; anything else as it is."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def flags(dims: Sequence[Dimension], values: dict[str, Any]) -> list[str]:
    """A trial's values as command-line flags (a boolean as --flag / --no-flag)."""
    out: list[str] = []
    for d in dims:
        v = values[d.name]
        if isinstance(v, bool):
            out.append(d.flag if v else "--no-" + d.flag[2:])
        else:
            out += [d.flag, str(v)]
    return out


def corners(dims: Sequence[Dimension]) -> list[dict[str, Any]]:
    """The values a check must accept before anything runs: each range's ends, each choice."""
    out = []
    for d in dims:
        values = list(d.choices) if d.kind == "choices" else [d.low, d.high]
        for v in values:
            out.append({d.name: int(v) if d.kind == "int" and v is not None else v})
    return out
