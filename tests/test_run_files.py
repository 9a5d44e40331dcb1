"""A run folder's files (trainer/run_files.py): one atomic write path that leaves nothing behind on any failure and
gives files the umask's permissions, a lock that keeps a second run out, and a log read back after a cut append."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from trainer.errors import UsageError
from trainer.run_files import OutputFolder, WriteFailed, atomic_write, read_jsonl, save_state_dict, write_json


def test_files_get_the_umasks_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(str(tmp_path / "summary.json"), {"a": 1})
        save_state_dict({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    finally:
        os.umask(old)
    for name in ("summary.json", "model.safetensors"):  # readable by a serving container, as metrics.jsonl is
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("PytorchStreamWriter failed"),
                                   ValueError("SafetensorError: I/O error")])
def test_any_failure_of_a_write_is_one_line_and_leaves_no_temporary_file(tmp_path, error):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise error

    with pytest.raises(WriteFailed, match=r"could not write .*x\.json \(.*free there\): free space"):
        atomic_write(str(tmp_path / "x.json"), write)
    assert os.listdir(tmp_path) == []


def test_a_second_holder_of_an_output_folder_is_refused_and_an_unused_new_folder_is_removed(tmp_path):
    out = tmp_path / "run"
    with OutputFolder(str(out)):
        with pytest.raises(UsageError, match="is in use by another run right now"):
            with OutputFolder(str(out)):
                pass
        assert out.is_dir()
    with pytest.raises(RuntimeError):
        with OutputFolder(str(tmp_path / "new")):
            raise RuntimeError("bad input found later")
    assert not (tmp_path / "new").exists()  # made for the run, left empty: removed
    with OutputFolder(str(out)):  # the first holder let go
        pass


def test_a_log_whose_last_append_was_cut_reads_back_and_a_damaged_middle_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n" + '{"event": "tr')
    assert read_jsonl(str(path)) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(UsageError, match=r"metrics.jsonl line 2 is not JSON"):
        read_jsonl(str(path))
