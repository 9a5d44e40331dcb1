"""The study's finished runs as its report reads them: each run's summary (typed) and metric records, and the titles
the tables and plots give them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from ..run_files import CONFIG_FILE, METRICS_FILE, read_jsonl
from ..run_records import RunConfig, RunSummary

TITLES = {
    "part1_base_scratch": "1. ViT-B from scratch",
    "part2_base_pretrained": "2. ViT-B pretrained",
    "part3_tiny_pretrained": "3. ViT-Ti pretrained",
    "part4_tiny_distilled": "4. ViT-Ti pretrained + teacher",
    "part4_tiny_feature": "4f. ViT-Ti pretrained + teacher features",
    "part4_tiny_scratch": "4'. ViT-Ti from scratch",
}


@dataclass
class StudyRun:
    """One finished run of the study."""

    summary: RunSummary
    records: list[dict[str, Any]]  # its metrics.jsonl
    config: Optional[RunConfig] = None  # its config.json

    def model_words(self) -> str:
        """The model as built: timm's name, and the keyword arguments and input size that make it another size."""
        if self.config is None:
            return self.summary.model
        kwargs = ", ".join(f"{k}={v}" for k, v in sorted(self.config.model_kwargs.items()))
        return f"{self.summary.model} ({kwargs + '; ' if kwargs else ''}{self.config.img_size} px)"


def load_study_runs(out_dir: str) -> dict[str, StudyRun]:
    """The study's runs that finished, in TITLES order."""
    runs = {}
    for name in TITLES:
        folder = os.path.join(out_dir, name)
        summary = RunSummary.read(folder)
        if summary is not None:
            runs[name] = StudyRun(summary, read_jsonl(os.path.join(folder, METRICS_FILE)),
                                  RunConfig.read(os.path.join(folder, CONFIG_FILE)))
    return runs
