"""The study's figures: learning curves, the accuracy/throughput trade-off, confusion matrices."""
from __future__ import annotations

from typing import Any

from .results import TITLES, StudyRun

def plot_curves(runs: dict[str, StudyRun], path: str) -> list[str]:
    """Loss and top-1 against epoch: eval (solid, every evaluation) and train (dashed, epoch averages); and, for
    the runs that distil, their train loss parts (label term loss_ce, teacher term loss_kd), so that a reader sees
    what the teacher term does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    parts = {run: s for run, s in runs.items() if any("loss_kd" in r for r in s.records)}
    fig, axes = plt.subplots(1, 3 if parts else 2, figsize=(19 if parts else 13, 5.2))
    for i, (run, s) in enumerate(runs.items()):
        recs = s.records
        evals = [r for r in recs if r["event"] == "eval" and r.get("loss") is not None]
        # Train lines are running averages over the epoch so far; the epoch-end value is the epoch's average.
        trains = [r for r in recs if r["event"] == "train" and float(r["epoch"]).is_integer()]
        for ax, key, scale in ((axes[0], "loss", 1), (axes[1], "top1", 100)):
            ax.plot([r["epoch"] for r in evals], [scale * r[key] for r in evals], "-", marker=".", color=f"C{i}")
            ax.plot([r["epoch"] for r in trains], [scale * r[key] for r in trains], "--", marker="x", color=f"C{i}",
                    alpha=0.8)
        if run in parts:
            for key, style in (("loss_ce", ":"), ("loss_kd", "-.")):
                axes[2].plot([r["epoch"] for r in trains], [r[key] for r in trains], style, marker="x", color=f"C{i}",
                             label=f"{TITLES[run]}: {key}")
    if parts:
        axes[2].set(xlabel="epoch", ylabel="train loss part (before weighting)",
                    title="Distillation: label term (CE) and teacher term (KD)")
        axes[2].legend(fontsize=7)
    axes[0].set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    axes[1].set(xlabel="epoch", ylabel="top-1 (%)", title="Top-1 accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=f"C{i}", lw=3, label=TITLES[run]) for i, run in enumerate(runs)]
    handles += [Line2D([], [], color="k", ls="-", marker=".", label="eval"),
                Line2D([], [], color="k", ls="--", marker="x", label="train (epoch average)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [ax.get_title() for ax in axes]


def plot_tradeoff(runs: dict[str, StudyRun], throughput: dict, path: str, device: str) -> None:
    """Final eval top-1 against test-time images/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.8))
    xs = []
    for i, (run, s) in enumerate(runs.items()):
        key = "base" if "base" in run else "tiny"
        if key not in throughput or s.summary.final.get("eval_top1") is None:
            continue
        x, y = throughput[key]["images_per_s"], 100 * s.summary.eval_top1
        xs.append(x)
        ax.scatter([x], [y], color=f"C{i}", s=60, zorder=3)
        # Runs of one model share an x: alternate the labels above and below so close points stay readable.
        ax.annotate(TITLES[run], (x, y), textcoords="offset points", xytext=(-7, 6 if i % 2 else -12), fontsize=8,
                    ha="right")
    ax.set_xscale("log")
    if xs:
        ax.set_xlim(min(xs) / 3, max(xs) * 1.8)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=f"test-time throughput (images/s, {device}, log scale)", ylabel="final eval top-1 (%)",
           title="Accuracy against speed")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(per_class: dict[str, dict[str, Any]], path: str) -> None:
    """One confusion matrix per run (rows: true class, columns: predicted), each row as fractions of its class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(per_class), figsize=(5.2 * len(per_class), 4.6), squeeze=False)
    for ax, (title, pc) in zip(axes[0], per_class.items(), strict=True):
        cm = np.asarray(pc["confusion_matrix"], dtype=float)
        rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        names = pc["label_names"]
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for i in range(len(names)):
            for j in range(len(names)):
                if cm[i, j]:
                    ax.text(j, i, f"{rows[i, j]:.2f}".lstrip("0"), ha="center", va="center", fontsize=6,
                            color="white" if rows[i, j] > 0.5 else "black")
        ax.set_title(f"{title}: accuracy {pc['accuracy']:.1%}", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
