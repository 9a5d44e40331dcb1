"""The study's figures: learning curves, the accuracy/throughput trade-off, confusion matrices."""
from __future__ import annotations

from typing import Any

from ..evaluation.curves import Curves
from ..evaluation.curves import plot_curves as draw_curves
from .results import TITLES, StudyRun

def plot_curves(runs: dict[str, StudyRun], path: str) -> list[str]:
    """The study's runs' learning curves side by side (trainer.evaluation.curves), titled as the report titles them."""
    return draw_curves([Curves(TITLES[run], s.records, s.summary.task.get("kd_type")) for run, s in runs.items()], path)


def tradeoff_labels(points: dict[str, tuple[float, float]], gap: float = 1.5) -> dict[str, tuple[float, float]]:
    """Where each point's label goes (x, top-1): runs of one model share a throughput, so their labels are stacked in
    the order of their top-1, at least `gap` points apart, each joined to its point by a line: a label can never be
    read as its neighbour's."""
    out: dict[str, tuple[float, float]] = {}
    for x in {x for x, _ in points.values()}:
        column = sorted((k for k, (px, _) in points.items() if px == x), key=lambda k: points[k][1])
        heights: list[float] = []
        for k in column:
            heights.append(points[k][1] if not heights else max(points[k][1], heights[-1] + gap))
        shift = (sum(points[k][1] for k in column) - sum(heights)) / len(column)  # centred on the points
        for k, h in zip(column, heights, strict=True):
            out[k] = (x, h + shift)
    return out


def plot_tradeoff(runs: dict[str, StudyRun], throughput: dict, path: str, device: str) -> None:
    """Final eval top-1 against test-time images/s, every run labelled beside its own point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 5))
    points: dict[str, tuple[float, float]] = {}
    colors = {}
    for i, (run, s) in enumerate(runs.items()):
        key = "base" if "base" in run else "tiny"
        if key not in throughput or s.summary.final.get("eval_top1") is None:
            continue
        points[TITLES[run]] = (throughput[key]["images_per_s"], 100 * s.summary.eval_top1)
        colors[TITLES[run]] = f"C{i}"
    for title, (lx, ly) in tradeoff_labels(points).items():
        x, y = points[title]
        ax.scatter([x], [y], color=colors[title], s=60, zorder=3)
        ax.annotate(title, (x, y), xytext=(lx / 1.25, ly), textcoords="data", fontsize=8, ha="right", va="center",
                    color=colors[title], arrowprops=dict(arrowstyle="-", color=colors[title], lw=0.8))
    ax.set_xscale("log")
    if points:
        xs = [x for x, _ in points.values()]
        ax.set_xlim(min(xs) / 6, max(xs) * 1.8)
    # Ticks at 1, 2 and 5 of each decade, written as numbers: a throughput can be read off the axis.
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs="auto"))
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
