"""Every ready-made accelerate config loads through accelerate's own loader and says what its name says."""
from __future__ import annotations

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from .helpers import ROOT

EXPECTED = {
    "single_gpu_fp16_t4.yaml": ("NO", "fp16", 1, False),
    "single_gpu_bf16.yaml": ("NO", "bf16", 1, False),
    "multi_gpu.yaml": ("MULTI_GPU", "bf16", None, False),
    "multi_node.yaml": ("MULTI_GPU", "bf16", None, False),
    "fsdp.yaml": ("FSDP", "bf16", None, False),
    "cpu.yaml": ("NO", "no", 1, True),
}


def test_every_config_is_covered():
    assert sorted(p.name for p in (ROOT / "accelerate_configs").glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads(name):
    cfg = load_config_from_file(str(ROOT / "accelerate_configs" / name))
    kind, precision, processes, cpu = EXPECTED[name]
    assert str(cfg.distributed_type).split(".")[-1] == kind
    assert cfg.mixed_precision == precision
    assert bool(cfg.use_cpu) == cpu
    if processes is not None:
        assert cfg.num_processes == processes
    else:
        assert cfg.num_processes > 1
    if name == "multi_node.yaml":
        assert cfg.num_machines > 1 and cfg.main_process_ip and cfg.main_process_port
    if name == "fsdp.yaml":
        assert cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "Block"  # timm's ViT block class
