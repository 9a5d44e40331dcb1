"""Learning curves of one run or several side by side (curves.png): loss and top-1 against epoch, eval (solid, every
evaluation) and train (dashed, epoch averages), and, for runs that distil, their two train terms, with the logit
terms (KL x T^2, or CE on the teacher's argmax) and the feature term (an MSE) on axes of their own."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..run_files import METRICS_FILE, read_jsonl
from ..run_records import RunSummary

LOGIT_TERMS = ("soft", "hard", "token")  # kd_type of the runs whose teacher term is on logits


@dataclass
class Curves:
    """What one run's curves are drawn from."""

    title: str
    records: list[dict[str, Any]]  # its metrics.jsonl
    kd_type: Optional[str] = None  # the run's --kd-type, for a distilled run
    style: dict[str, Any] = field(default_factory=dict)


def run_curves(folder: str, title: Optional[str] = None) -> Curves:
    """A run folder's curves (a run still training has its log and no summary yet)."""
    summary = RunSummary.read(folder)
    kd_type = summary.task.get("kd_type") if summary is not None else None
    return Curves(title or os.path.basename(os.path.normpath(folder)), read_jsonl(os.path.join(folder, METRICS_FILE)),
                  kd_type)


def plot_curves(runs: list[Curves], path: str, fmt: Optional[str] = None) -> list[str]:
    """Draw the runs' curves into one figure (fmt: the image format, where the path's ending does not say it); return
    the panels' titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    distilled = [r for r in runs if any("loss_kd" in rec for rec in r.records)]
    logit = [r for r in distilled if r.kd_type in LOGIT_TERMS or r.kd_type is None]
    feature = [r for r in distilled if r.kd_type == "feature"]
    extra = [("logit", logit)] * bool(logit) + [("feature", feature)] * bool(feature)
    fig, axes = plt.subplots(1, 2 + len(extra), figsize=(6.5 * (2 + len(extra)), 5.2), squeeze=False)
    axes = axes[0]
    for i, run in enumerate(runs):
        color = run.style.get("color", f"C{i}")
        evals = [r for r in run.records if r["event"] == "eval" and r.get("loss") is not None]
        # Train lines are running averages over the epoch so far; the epoch-end value is the epoch's average.
        trains = [r for r in run.records if r["event"] == "train" and float(r["epoch"]).is_integer()]
        for ax, key, scale in ((axes[0], "loss", 1), (axes[1], "top1", 100)):
            ax.plot([r["epoch"] for r in evals], [scale * r[key] for r in evals], "-", marker=".", color=color)
            ax.plot([r["epoch"] for r in trains], [scale * r[key] for r in trains], "--", marker="x", color=color,
                    alpha=0.8)
        for ax, (_, members) in zip(axes[2:], extra, strict=True):
            if run in members:
                ax.plot([r["epoch"] for r in trains], [r["loss_kd"] for r in trains], "-.", marker="x", color=color,
                        label=f"{run.title}: teacher term")
                ax.plot([r["epoch"] for r in trains], [r["loss_ce"] for r in trains], ":", marker="x", color=color,
                        label=f"{run.title}: label term (CE)")
    for ax, (kind, _) in zip(axes[2:], extra, strict=True):
        what = ("KL at T, times T^2 (soft), or CE on the teacher's argmax (hard)" if kind == "logit"
                else "MSE between pooled features")
        ax.set(xlabel="epoch", ylabel="train term, before weighting",
               title=f"Distillation on {'logits' if kind == 'logit' else 'features'}: teacher term = {what}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    axes[0].set(xlabel="epoch", ylabel="eval: cross-entropy; train: the run's objective",
                title="Loss (a distilled run's train loss is (1 - alpha) CE + alpha KD)")
    axes[0].title.set_fontsize(9)
    axes[1].set(xlabel="epoch", ylabel="top-1 (%)", title="Top-1 accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=r.style.get("color", f"C{i}"), lw=3, label=r.title) for i, r in enumerate(runs)]
    handles += [Line2D([], [], color="k", ls="-", marker=".", label="eval"),
                Line2D([], [], color="k", ls="--", marker="x", label="train (epoch average)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110, format=fmt)
    plt.close(fig)
    return [ax.get_title() for ax in axes]
