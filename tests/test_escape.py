"""Text from the data (class names, file names) cannot break the tables it is written into."""
from __future__ import annotations

from trainer.escape import markdown_cell, terminal_cell
from trainer.model_card import public_name, public_record


def test_a_markdown_cell_keeps_the_table_whole_and_renders_no_html():
    cell = markdown_cell("a|b\nc <img src=x> *bold* `code`")
    assert "\n" not in cell and "|" not in cell.replace("\\|", "")
    assert "<" not in cell and "&lt;img src=x&gt;" in cell and "\\*bold\\*" in cell and "\\`code\\`" in cell


def test_a_terminal_cell_shows_control_characters_instead_of_obeying_them():
    assert terminal_cell("cat\n\x1b[2Jdog\r") == "cat\\n\\x1b[2Jdog\\r"
    assert terminal_cell("plain name") == "plain name"


def test_published_records_keep_hub_ids_and_cut_local_paths(tmp_path):
    folder = tmp_path / "data" / "cifar"
    folder.mkdir(parents=True)
    record = {"dataset": str(folder), "hub": "uoft-cs/cifar10", "init": f"file:{tmp_path}/w.safetensors",
              "nested": [{"teacher": "./runs/part2"}], "lr": 0.1, "aa": "rand-m9-mstd0.5"}
    out = public_record(record)
    assert out == {"dataset": "cifar", "hub": "uoft-cs/cifar10", "init": "file:w.safetensors",
                   "nested": [{"teacher": "part2"}], "lr": 0.1, "aa": "rand-m9-mstd0.5"}
    assert public_name("~/x/y") == "y"
