"""Distillation runs: frozen teacher, exact teacher cache, agreement, feature and token students, bad teachers."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from trainer.commands.train import main_cls, main_kd
from trainer.run_files import read_jsonl

from .helpers import ROOT, SMALL_VIT, assert_same_run, make_dataset, run_here, wait_for_step

STUDENT = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=8", "depth=1"]


def _kd_args(dataset, out, cache_dir, teacher, *extra):
    return [*STUDENT, "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "60", "--batch-size", "16", "--lr", "2e-3", "--warmup-epochs", "0.2",
            "--no-progress", "--teacher", str(teacher), *extra]


@pytest.fixture(scope="module")
def hard_dataset(tmp_path_factory):
    """Classes that overlap (a teacher gets about 3 in 4 right), so that students can disagree with it."""
    return make_dataset(tmp_path_factory.mktemp("hard") / "hard", {"train": 60, "test": 50}, spread=0.5)


@pytest.fixture(scope="module")
def teacher(hard_dataset, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "t"
    main_cls([*SMALL_VIT, "--dataset", str(hard_dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
              "--samples-per-class", "60", "--batch-size", "16", "--lr", "2e-3", "--warmup-epochs", "0.2",
              "--epochs", "3", "--no-progress"])
    return out


def _digest(folder) -> dict:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_distilled_student_agrees_more_and_teacher_is_untouched(hard_dataset, cache_dir, teacher, tmp_path):
    before = _digest(teacher)
    distilled = main_kd(_kd_args(hard_dataset, tmp_path / "kd", cache_dir, teacher, "--epochs", "3",
                                 "--kd-alpha", "1", "--kd-temperature", "2"))
    alone = main_kd(_kd_args(hard_dataset, tmp_path / "alone", cache_dir, teacher, "--epochs", "3",
                             "--kd-alpha", "0"))
    assert _digest(teacher) == before
    teacher_summary = json.loads((teacher / "summary.json").read_text())
    assert distilled["teacher_eval_top1"] == pytest.approx(teacher_summary["final"]["eval_top1"])
    assert distilled["teacher_agreement"] >= alone["teacher_agreement"] + 0.05
    saved = json.loads((tmp_path / "kd" / "summary.json").read_text())
    for key in ("teacher", "kd_type", "kd_alpha", "kd_temperature", "teacher_eval_top1", "teacher_agreement"):
        assert key in saved
    records = [json.loads(line) for line in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "teacher_eval"
    assert all("agreement" in r for r in records if r["event"] == "eval")


@pytest.mark.slow
def test_teacher_eval_is_reused_from_its_run_only_where_it_applies(hard_dataset, cache_dir, teacher, tmp_path):
    """The teacher's saved final eval predictions stand in for evaluating it again, with the same results."""
    copy = tmp_path / "t"
    shutil.copytree(teacher, copy)
    saved = (copy / "eval_predictions.safetensors").read_bytes()

    def agreements(out):
        return [r["agreement"] for r in read_jsonl(str(out / "metrics.jsonl")) if r["event"] == "eval"]

    reused = main_kd(_kd_args(hard_dataset, tmp_path / "a", cache_dir, copy, "--epochs", "1"))
    (copy / "eval_predictions.safetensors").write_bytes(saved[:100])  # damaged: evaluate the teacher instead
    fresh = main_kd(_kd_args(hard_dataset, tmp_path / "b", cache_dir, copy, "--epochs", "1"))
    assert reused["teacher_eval_reused"] and not fresh["teacher_eval_reused"]
    assert reused["teacher_eval_top1"] == fresh["teacher_eval_top1"]
    assert agreements(tmp_path / "a") == agreements(tmp_path / "b")
    (copy / "eval_predictions.safetensors").write_bytes(saved)
    other = main_kd(_kd_args(hard_dataset, tmp_path / "c", cache_dir, copy, "--epochs", "1",
                             "--eval-samples-per-class", "20"))
    assert not other["teacher_eval_reused"]  # other eval images: the saved predictions do not apply


@pytest.mark.slow
def test_evaluate_compare_with_gives_the_runs_own_agreement(hard_dataset, cache_dir, teacher, tmp_path):
    """trainer.evaluate --compare-with TEACHER reproduces the student's final agreement, saved predictions or not."""
    from trainer.commands.evaluate import main as evaluate_main

    student = tmp_path / "s"
    summary = main_kd(_kd_args(hard_dataset, student, cache_dir, teacher, "--epochs", "1"))
    copy = tmp_path / "t"
    shutil.copytree(teacher, copy)
    argv = ["--run", str(student), "--cache-dir", str(cache_dir), "--batch-size", "37"]
    with_saved = evaluate_main([*argv, "--compare-with", str(copy)])
    (copy / "eval_predictions.safetensors").unlink()
    evaluated = evaluate_main([*argv, "--compare-with", str(copy)])
    assert with_saved["agreement"] == evaluated["agreement"] == summary["teacher_agreement"]
    assert with_saved["top1"] == pytest.approx(summary["final"]["eval_top1"])


@pytest.mark.slow
@pytest.mark.parametrize("data_on,extra", [("device", []), ("host", []), ("disk", []),
                                           ("device", ["--random-crop", "4"]), ("host", ["--random-resized-crop"]),
                                           ("device", ["--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.5", "--recount",
                                                       "2"]),
                                           ("disk", ["--aa", "trivial", "--reprob", "0.3", "--remode", "rand"])])
def test_teacher_cache_equals_online_teacher(hard_dataset, cache_dir, teacher, tmp_path, data_on, extra):
    from trainer.training.batches import EpochBatches
    from trainer.train_args import parse_args
    from trainer.distill.tasks import distillation_task
    from trainer.training.setup import build_setup

    cfg = parse_args(_kd_args(hard_dataset, tmp_path / "x", cache_dir, teacher, "--teacher-cache", "--epochs", "3",
                              "--data-on", data_on, *extra), kd=True)
    setup = build_setup(cfg)
    assert setup.data.train.images.kind == data_on
    cached = distillation_task(cfg, setup)
    online = distillation_task(parse_args(_kd_args(hard_dataset, tmp_path / "y", cache_dir, teacher, *extra), kd=True),
                               setup)
    assert cached.cache is not None and online.cache is None
    n = len(setup.data.train)
    for epoch in range(cfg.epochs):  # every batch the run will draw finds its exact teacher logits in the cache
        for micro in EpochBatches(setup.data.train, setup.view, cfg, setup.accelerator, epoch).starting_at(0):
            assert torch.allclose(cached.teacher_targets(micro.batch), online.teacher_targets(micro.batch), atol=1e-5)
    computed = torch.isfinite(cached.cache.values).all(-1)
    assert int(computed.sum()) == cached.cache.forwards
    if extra:  # random crops, ops, erasing: one view per image and epoch, each computed once
        assert cached.cache.values.shape == (n, 3, 4) and cached.cache.forwards == 3 * n
    else:  # only the visited pairs: 3 epochs leave about 1 image in 4 seen in one view only
        assert cached.cache.values.shape == (n, 2, 4)
        assert n <= cached.cache.forwards < 2 * n and computed.any(-1).all()


@pytest.mark.slow
def test_loss_parts_are_logged_and_add_up_to_the_loss(hard_dataset, cache_dir, teacher, tmp_path):
    summary = main_kd(_kd_args(hard_dataset, tmp_path / "kd", cache_dir, teacher, "--epochs", "1", "--kd-alpha", "0.3",
                               "--log-every", "4"))
    trains = [r for r in read_jsonl(str(tmp_path / "kd" / "metrics.jsonl")) if r["event"] == "train"]
    assert len(trains) == 4  # steps 4, 8, 12 and the epoch's end (15)
    for r in trains:  # each part is averaged over the same images as the loss
        assert r["loss_ce"] > 0 and r["loss_kd"] > 0
        assert r["loss"] == pytest.approx(0.7 * r["loss_ce"] + 0.3 * r["loss_kd"], rel=1e-6)  # float32 steps
    assert summary["final"]["train_loss_kd"] == trains[-1]["loss_kd"]


@pytest.mark.slow
def test_one_epoch_cache_costs_one_teacher_pass(hard_dataset, cache_dir, teacher, tmp_path):
    summary = main_kd(_kd_args(hard_dataset, tmp_path / "one", cache_dir, teacher, "--teacher-cache", "--epochs", "1"))
    assert summary["teacher_cache_forwards"] == summary["num_train"] and summary["teacher_cache_reused"] is False


def _bad_teachers(teacher, tmp_path, hard_dataset):
    truncated = tmp_path / "truncated"
    shutil.copytree(teacher, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 3])
    no_config = tmp_path / "no_config"
    shutil.copytree(teacher, no_config)
    (no_config / "config.json").unlink()
    other_classes = tmp_path / "other_classes"
    shutil.copytree(teacher, other_classes)
    cfg = json.loads((other_classes / "config.json").read_text())
    cfg["label_names"] = ["cat", "dog", "ship", "truck"]
    (other_classes / "config.json").write_text(json.dumps(cfg))
    pth = tmp_path / "weights.pth"
    pth.write_bytes(b"x")
    return [
        (tmp_path / "missing", "does not exist"),
        (truncated, "not a readable safetensors file"),
        (no_config / "model.safetensors", "no config.json beside it"),
        (other_classes, "was trained on 4 classes"),
        (pth, "is not a safetensors checkpoint"),
    ]


@pytest.mark.slow
def test_bad_teachers_exit_2_with_one_line(hard_dataset, teacher, tmp_path, cache_dir, capsys):
    three = make_dataset(tmp_path / "three", {"train": 60, "test": 10}, num_classes=3)
    cases = [(hard_dataset, bad, [], message) for bad, message in _bad_teachers(teacher, tmp_path, hard_dataset)]
    cases.append((three, teacher, [],
                  "was trained on 4 classes ['class0', 'class1', 'class2', 'class3'], the dataset has 3"))
    cases.append((hard_dataset, teacher, ["--kd-type", "token"], "needs a student with a distillation token and head"))
    for k, (dataset, bad, extra, message) in enumerate(cases):
        out = tmp_path / f"out-{k}"
        with pytest.raises(SystemExit) as stop:
            main_kd(_kd_args(dataset, out, cache_dir, bad, "--epochs", "1", *extra))
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert stop.value.code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, (bad, err)
        assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kd_type", ["feature"])  # soft: the SIGTERM test below resumes it
def test_distillation_resumes_exactly(hard_dataset, cache_dir, teacher, tmp_path, kd_type):
    from safetensors.torch import load_file

    kd = ["--kd-type", kd_type]
    ref = main_kd(_kd_args(hard_dataset, tmp_path / "ref", cache_dir, teacher, "--epochs", "2", "--teacher-cache", *kd))
    out = tmp_path / "cut"
    main_kd(_kd_args(hard_dataset, out, cache_dir, teacher, "--epochs", "2", "--teacher-cache", *kd,
                     "--checkpoint-every", "7", "--keep-checkpoints", "5"))
    # Go back to the middle of epoch 1 (step 7 of 15) as if the run had died there, and continue from there.
    for name in ("model.safetensors", "summary.json", "config.json"):
        (out / name).unlink()
    resumed = main_kd(_kd_args(hard_dataset, out, cache_dir, teacher, "--epochs", "2", "--teacher-cache", *kd,
                               "--resume-from", str(out / "checkpoints" / "step-7")))  # with the projection's state
    assert resumed["final"] == ref["final"] and resumed["teacher_agreement"] == ref["teacher_agreement"]
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_distillation_with_the_teacher_cache_survives_sigterm(hard_dataset, cache_dir, teacher, tmp_path, capsys):
    """SIGTERM mid-epoch, then the same command: the weights and metric lines of the run left alone."""
    def args(out):
        return _kd_args(hard_dataset, out, cache_dir, teacher, "--epochs", "3", "--teacher-cache", "--log-every", "2",
                        "--resume-from", "auto")

    ref, out = tmp_path / "ref", tmp_path / "cut"
    main_kd(args(ref))
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_kd.py"), *args(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, out / "metrics.jsonl", 4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75 and "stopped by SIGTERM" in err, err[-3000:]
    (ckpt,) = (out / "checkpoints").iterdir()
    assert json.loads((ckpt / "trainer_state.json").read_text())["micro"] > 0
    res = run_here(main_kd, *args(out), capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_run(ref, out)
    assert json.loads((out / "summary.json").read_text())["teacher_agreement"] == json.loads(
        (ref / "summary.json").read_text())["teacher_agreement"]


@pytest.mark.slow
def test_a_convnet_teaches_a_vit(hard_dataset, cache_dir, tmp_path):
    """--img-size goes only to models built for one input size; a resnet's images are resized to it instead."""
    from trainer.commands.evaluate import main as evaluate_main

    conv = tmp_path / "resnet"
    summary = main_cls(["--model", "resnet18", "--img-size", "48", "--dataset", str(hard_dataset), "--output-dir",
                        str(conv), "--cache-dir", str(cache_dir), "--samples-per-class", "30", "--batch-size", "16",
                        "--epochs", "1", "--lr", "1e-3", "--no-progress"])
    assert json.loads((conv / "config.json").read_text())["img_size"] == 48
    assert evaluate_main(["--run", str(conv), "--cache-dir", str(cache_dir)])["top1"] == pytest.approx(
        summary["final"]["eval_top1"])  # rebuilt from its folder, evaluated at 48 px as trained
    kd = main_kd(_kd_args(hard_dataset, tmp_path / "kd", cache_dir, conv, "--epochs", "1", "--teacher-cache"))
    assert kd["teacher"].rstrip("/").endswith("resnet")
    assert kd["teacher_eval_top1"] == pytest.approx(summary["final"]["eval_top1"])
    assert 0 <= kd["teacher_agreement"] <= 1


def _train_losses(folder) -> list[float]:
    return [r["loss_kd"] for r in read_jsonl(str(folder / "metrics.jsonl")) if r["event"] == "train"]


@pytest.mark.slow
def test_shared_teacher_cache_serves_a_sweep_and_rebuilds_what_it_cannot_trust(hard_dataset, cache_dir, teacher,
                                                                               tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    shared = tmp_path / "teacher-cache"

    def kd(name, *extra):
        return main_kd(_kd_args(hard_dataset, tmp_path / name, cache_dir, teacher, "--epochs", "1",
                                "--teacher-cache-dir", str(shared), *extra))

    first = kd("first")
    n = first["num_train"]
    assert first["teacher_cache_forwards"] == 2 * n and first["teacher_cache_reused"] is False  # both views, any seed
    again = kd("again")  # the same arguments, served wholly from the folder: the same weights
    assert again["teacher_cache_forwards"] == 0 and again["teacher_cache_reused"] is True
    assert _digest(tmp_path / "first")["model.safetensors"] == _digest(tmp_path / "again")["model.safetensors"]
    # Another point of the sweep, on another selection of the images (30 of the 60 per class, by another seed):
    # its rows are found in the files, which are indexed by the source split's rows.
    other = kd("other", "--kd-alpha", "0.3", "--kd-temperature", "2", "--seed", "7", "--samples-per-class", "30")
    assert other["num_train"] == n // 2 and other["teacher_cache_forwards"] == 0 and other["teacher_cache_reused"]
    (slot0, slot1) = sorted(shared.glob("*/slot*.safetensors"))
    slot1.write_bytes(slot1.read_bytes()[:100])  # damaged: computed again, never trusted
    capsys.readouterr()
    rebuilt = kd("rebuilt")
    assert rebuilt["teacher_cache_forwards"] == n and "is damaged" in capsys.readouterr().err
    with safe_open(str(slot0), framework="pt") as f:  # this teacher's key, but outputs of another width
        key, rows = f.metadata()["key"], f.get_tensor("rows")
    save_file({"rows": rows, "values": torch.zeros(len(rows), 7)}, str(slot0), metadata={"key": key})
    with pytest.raises(SystemExit) as stop:
        kd("wide")
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "holds outputs 7 wide, the teacher gives 4" in lines[0]
    assert not (tmp_path / "wide").exists()


@pytest.mark.slow
def test_feature_distillation_trains_a_projection_and_saves_the_plain_student(hard_dataset, cache_dir, teacher,
                                                                              tmp_path):
    from trainer.commands.evaluate import main as evaluate_main
    from trainer.models import load_trained

    out = tmp_path / "feature"
    args = _kd_args(hard_dataset, out, cache_dir, teacher, "--epochs", "2", "--kd-type", "feature", "--kd-alpha", "0.5",
                    "--log-every", "5", "--teacher-cache-dir", str(tmp_path / "tc"))
    args[args.index("depth=1") + 1:args.index("depth=1") + 1] = ["embed_dim=96", "num_heads=2"]  # narrower than 192
    summary = main_kd(args)
    assert summary["kd_projection"].startswith("Linear(in_features=96, out_features=192")
    assert summary["teacher_cache_forwards"] == 2 * summary["num_train"]  # pooled features of both views, cached
    losses = _train_losses(out)
    assert losses[-1] < 0.8 * losses[0]  # the projected features move towards the teacher's
    model = load_trained(str(out)).model  # plain timm: the projection is not part of the saved model
    assert model.head.in_features == 96 and summary["num_params"] == sum(p.numel() for p in model.parameters())
    assert evaluate_main(["--run", str(out), "--cache-dir", str(cache_dir)])["top1"] == pytest.approx(
        summary["final"]["eval_top1"])


@pytest.mark.slow
@pytest.mark.parametrize("target", ["hard", "soft"])
def test_token_distillation_trains_the_distillation_head_and_averages_both(hard_dataset, cache_dir, teacher,
                                                                           tmp_path, target):
    from trainer.commands.evaluate import main as evaluate_main

    out = tmp_path / "token"
    args = _kd_args(hard_dataset, out, cache_dir, teacher, "--epochs", "2", "--kd-type", "token", "--kd-alpha", "0.5",
                    "--log-every", "5", "--teacher-cache", "--kd-token-target", target)
    args[args.index("vit_tiny_patch16_224")] = "deit_tiny_distilled_patch16_224"
    summary = main_kd(args)
    assert summary["kd_token_target"] == target and 0 <= summary["teacher_agreement"] <= 1
    losses = _train_losses(out)
    assert losses[-1] < 0.8 * losses[0]  # the distillation head learns the teacher's answers (or its soft targets)
    # Rebuilt by plain timm from its folder, it predicts with both heads averaged, as it was evaluated in training.
    assert evaluate_main(["--run", str(out), "--cache-dir", str(cache_dir)])["top1"] == pytest.approx(
        summary["final"]["eval_top1"])
