"""The figures: learning curves (trainer/evaluation/curves.py, the study's through trainer/study/plots.py) and the
study's accuracy/speed trade-off."""
from __future__ import annotations

from trainer.evaluation.curves import Curves, plot_curves
from trainer.run_records import RunSummary
from trainer.study.plots import plot_curves as study_curves
from trainer.study.plots import tradeoff_labels
from trainer.study.results import StudyRun


def _records(parts: bool) -> list:
    return [{"event": event, "epoch": float(e), "step": e, "loss": 1.0 / e, "top1": 0.1 * e,
             **({"loss_ce": 1.2 / e, "loss_kd": 0.8 / e} if parts and event == "train" else {})}
            for e in (1, 2, 3) for event in ("train", "eval")]


def test_the_curves_show_each_kind_of_teacher_term_on_its_own_axis(tmp_path):
    alone = Curves("alone", _records(False))
    assert len(plot_curves([alone], str(tmp_path / "a.png"))) == 2
    titles = plot_curves([alone, Curves("logit", _records(True), "soft"), Curves("feature", _records(True), "feature")],
                         str(tmp_path / "b.png"))
    assert len(titles) == 4 and "Distillation on logits" in titles[2] and "MSE" in titles[3]
    assert "objective" in titles[0] or "(1 - alpha) CE + alpha KD" in titles[0]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_the_study_titles_its_runs(tmp_path):
    def run(parts: bool, kd_type=None) -> StudyRun:
        return StudyRun(RunSummary.from_json({"final": {"eval_top1": 0.3}, "kd_type": kd_type}), _records(parts))

    titles = study_curves({"part3_tiny_pretrained": run(False), "part4_tiny_distilled": run(True, "soft")},
                          str(tmp_path / "c.png"))
    assert len(titles) == 3 and "logits" in titles[2]


def test_near_equal_points_are_labelled_without_swapping():
    """Two runs of one model at one throughput and nearly one top-1: each label sits on its own side of the points,
    in the order of the points' top-1, so that neither can be read as the other's."""
    points = {"4. logit": (100.0, 71.2), "4f. feature": (100.0, 71.9), "3. alone": (100.0, 70.8), "2. base": (10.0, 83.4)}
    labels = tradeoff_labels(points)
    same_x = sorted((k for k in points if points[k][0] == 100.0), key=lambda k: points[k][1])
    ys = [labels[k][1] for k in same_x]
    assert ys == sorted(ys) and len(set(ys)) == 3  # the label order is the points' order, no two labels at one height
    assert min(b - a for a, b in zip(ys, ys[1:], strict=False)) >= 1.0  # apart enough to read (in top-1 points)
