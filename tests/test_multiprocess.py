"""Two real processes on the CPU (torchrun, one gloo group): exact eval counts, one writer."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from trainer.run_files import read_jsonl

from .helpers import ROOT, SMALL_VIT, assert_same_run, make_dataset, wait_for_step

pytestmark = pytest.mark.slow  # every test here trains for real


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}", *args]


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_torchrun_cmd(nproc, *args), cwd=ROOT, capture_output=True, text=True, timeout=600)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
        except OSError:
            pass
    return sorted(found)


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory):
    """A test split of 1,001 images: it does not split evenly over 2 processes or batches."""
    return make_dataset(tmp_path_factory.mktemp("odd") / "odd", {"train": 30}, rows={"test": 1001})


def _two_process_args(dataset, out, cache_dir) -> list[str]:
    return [str(ROOT / "train_cls.py"), *SMALL_VIT, "--dataset", str(dataset), "--output-dir", str(out),
            "--cache-dir", str(cache_dir), "--samples-per-class", "25", "--eval-samples-per-class", "all",
            "--batch-size", "8", "--epochs", "2", "--eval-every", "5", "--no-progress"]


@pytest.fixture(scope="module")
def two_process_run(odd_dataset, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    res = torchrun(2, *_two_process_args(odd_dataset, out, cache_dir))
    assert res.returncode == 0, res.stderr[-4000:]
    return out, res


def test_two_processes_train_as_one_group(two_process_run):
    out, res = two_process_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["num_train"] == 100 and summary["num_eval"] == 1001
    # 100 images, global batch 16: 7 steps an epoch, not the 13 that two independent copies would each take.
    assert summary["steps"] == 14
    records = read_jsonl(str(out / "metrics.jsonl"))
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [5, 7, 10, 14]  # written once, by the main process
    assert res.stdout.count("epoch 1/2 |") == 1


@pytest.fixture(scope="module")
def one_process_eval(two_process_run, odd_dataset):
    """trainer.evaluate's JSON line for the two-process run, from one process."""
    res = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--run", str(two_process_run[0]),
                          "--dataset", str(odd_dataset), "--batch-size", "64"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_eval_counts_every_sample_once_on_two_processes(two_process_run, one_process_eval, odd_dataset, tmp_path):
    """Whichever store serves the images (three evaluations in one process group: one launch, not three)."""
    out, _ = two_process_run
    script = tmp_path / "three_stores.py"
    script.write_text(f"""
import json
from accelerate import PartialState
from trainer.distributed import end_processes
from trainer.evaluation.runs import evaluate_run

for data_on in ("device", "host", "disk"):
    res = evaluate_run({str(out)!r}, dataset={str(odd_dataset)!r}, batch_size=64, data_on=data_on)
    if PartialState().is_main_process:
        print(json.dumps({{"data_on": data_on, **res}}), flush=True)
end_processes()
""")
    res = torchrun(2, str(script))
    assert res.returncode == 0, res.stderr[-4000:]
    twos = [json.loads(line) for line in res.stdout.strip().splitlines() if line.startswith("{")]
    assert [two["data_on"] for two in twos] == ["device", "host", "disk"]
    one = one_process_eval
    summary = json.loads((out / "summary.json").read_text())
    assert abs(one["top1"] - summary["final"]["eval_top1"]) < 1e-9 and one["processes"] == 1
    for two in twos:
        assert one["num_samples"] == two["num_samples"] == 1001
        assert two["processes"] == 2 and two["top1"] == one["top1"]
        assert abs(two["loss"] - one["loss"]) < 1e-5


def test_teacher_cache_on_two_processes_equals_online_teacher(two_process_run, odd_dataset, cache_dir, tmp_path):
    """Each process computes its share of the views; the gathered cache, which the main process writes to the shared
    folder, must match the online teacher, and a later run finds every view there. Both runs share one process
    group: train() leaves it open for the next run, the entry point closes it once, at its end."""
    from trainer.commands.train import main_kd

    teacher, _ = two_process_run
    args = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=8", "depth=1",
            "--dataset", str(odd_dataset), "--cache-dir", str(cache_dir), "--samples-per-class", "25",
            "--eval-samples-per-class", "20", "--batch-size", "8", "--epochs", "2", "--log-every", "3",
            "--kd-alpha", "1", "--teacher", str(teacher), "--no-progress"]
    shared = ["--teacher-cache-dir", str(tmp_path / "shared")]
    script = tmp_path / "online_then_cached.py"
    script.write_text(f"""
from trainer.api import train
from trainer.train_args import parse_args
from trainer.distributed import end_processes

for mode, extra in (("online", []), ("cached", {shared!r})):
    train(parse_args([*{args!r}, "--output-dir", {str(tmp_path)!r} + "/" + mode, *extra], kd=True))
end_processes()
""")
    res = torchrun(2, str(script))
    assert res.returncode == 0, res.stderr[-4000:]
    losses = {mode: [r["loss"] for r in read_jsonl(str(tmp_path / mode / "metrics.jsonl")) if r["event"] == "train"]
              for mode in ("online", "cached")}
    summaries = {mode: json.loads((tmp_path / mode / "summary.json").read_text()) for mode in losses}
    assert [s["processes"] for s in summaries.values()] == [2, 2] and [s["steps"] for s in summaries.values()] == [14, 14]
    assert summaries["cached"]["teacher_cache_forwards"] == 2 * summaries["cached"]["num_train"]
    assert len(losses["cached"]) == 6  # steps 3, 6, 7 (end of epoch), 9, 12, 14
    assert losses["cached"] == pytest.approx(losses["online"], rel=1e-4)
    again = main_kd([*args, *shared, "--output-dir", str(tmp_path / "again")])
    assert again["teacher_cache_forwards"] == 0 and again["teacher_cache_reused"] is True


def test_evaluation_keeps_collective_calls_in_step_on_uneven_shards(tmp_path):
    """FSDP gathers parameters inside forward: every process must call the model equally often, also when the
    rows do not split evenly (5 images, 2 processes, batches of 2: shares of 3 and 2 rows)."""
    script = tmp_path / "collective_eval.py"
    script.write_text("""
import json
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from trainer.data.augment import View
from trainer.data.loading import SplitData
from trainer.evaluation.inference import evaluate_split
from trainer.data.stores import DeviceStore


class Gathers(torch.nn.Module):
    # Like an FSDP unit: a collective in every forward.
    def forward(self, x):
        calls = torch.ones(1)
        torch.distributed.all_reduce(calls)
        return x.mean((2, 3)) * calls / calls

acc = Accelerator(cpu=True, kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=20))])
images = torch.zeros(5, 3, 4, 4, dtype=torch.uint8)
images[:, 1] = 255
split = SplitData(DeviceStore(images), torch.tensor([1, 1, 1, 0, 1]), None, "k")
res = evaluate_split(Gathers(), split, View(4, (0.5,) * 3, (0.5,) * 3), acc, batch_size=2, keep_preds=True)
if acc.is_main_process:
    print(json.dumps({"n": res.num_samples, "top1": res.top1, "preds": res.preds.tolist()}))
acc.wait_for_everyone()
torch.distributed.destroy_process_group()
""")
    res = torchrun(2, str(script))
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"n": 5, "top1": 0.8, "preds": [1, 1, 1, 1, 1]}


def test_sigterm_to_both_processes_saves_one_checkpoint_and_continues_exactly(two_process_run, odd_dataset,
                                                                               cache_dir, tmp_path):
    """The two processes get the signal at different times; they agree on one step, save one checkpoint together,
    and the same command continues to the weights and metric lines of the run left alone."""
    ref, out = two_process_run[0], tmp_path / "cut"
    args = [*_two_process_args(odd_dataset, out, cache_dir), "--resume-from", "auto"]
    agent = subprocess.Popen(_torchrun_cmd(2, *args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    wait_for_step(agent, out / "metrics.jsonl", 5)  # the first evaluation is written
    workers = _children(agent.pid)
    assert len(workers) == 2
    for pid in workers:  # one after the other: the second process may see it a step later
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.05)
    _, err = agent.communicate(timeout=120)
    assert agent.returncode != 0 and "exitcode  : 75" in err, err[-3000:]
    (ckpt,) = (out / "checkpoints").iterdir()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert 5 <= state["step"] < 14 and len(state["meter"]) == 2  # before the end; both processes' figures
    res = torchrun(2, *args)
    assert res.returncode == 0, res.stderr[-4000:]
    assert_same_run(ref, out)


def test_a_full_disk_at_the_final_files_stops_both_processes_with_one_line(odd_dataset, cache_dir, tmp_path):
    """Only the main process writes the run's files; the other learns that it failed and stops with it."""
    from .helpers import SmallDisk, files_under

    with SmallDisk(tmp_path / "disk", "1m") as disk:
        out = disk / "run"
        args = _two_process_args(odd_dataset, out, cache_dir)
        args[args.index("--epochs") + 1] = "1"
        res = torchrun(2, *args)
        ours = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert res.returncode != 0 and len(ours) == 1, res.stderr[-4000:]
        assert f"could not write {out / 'model.safetensors'}" in ours[0] and "No space left on device" in ours[0]
        # No rank's own traceback: the one traceback there may be is torchrun's report of the failed worker.
        assert res.stderr.count("Traceback") <= 1 and ("ChildFailedError" in res.stderr or "Traceback" not in res.stderr)
        assert files_under(out) == ["metrics.jsonl"]
