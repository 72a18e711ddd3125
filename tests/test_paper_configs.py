"""The paper-scale configuration files load: configs/paper/*.yaml through listopd's own config loader (the
model and data paths are placeholders and need not exist), configs/accelerate/*.yaml through accelerate's
launcher (the same parsing `accelerate launch --config_file` does, down to the environment it hands the
processes). Nothing is trained here."""

from __future__ import annotations

from pathlib import Path

import pytest

from listopd.util.config import config_from_dict, read_yaml
from listopd.train.cliff import cliff_check
from listopd.train.opd_config import OPDConfig
from listopd.train.sft_config import SFTConfig

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"sft_teacher_qwen3_8b.yaml": SFTConfig, "sft_warmstart_qwen3_1p7b.yaml": SFTConfig,
         "opd_qwen3_1p7b_from_8b.yaml": OPDConfig}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_loads(name):
    path = ROOT / "configs" / "paper" / name
    cfg = config_from_dict(PAPER[name], read_yaml(str(path)), source=str(path))
    assert cfg.bf16 is True
    assert cfg.batch_size % 8 == 0 and (cfg.batch_size // 8) % cfg.micro_batch_size == 0  # 8 ranks


def test_paper_opd_is_the_reference_recipe():
    cfg = config_from_dict(OPDConfig, read_yaml(str(ROOT / "configs" / "paper" / "opd_qwen3_1p7b_from_8b.yaml")))
    assert (cfg.reward_scale, cfg.clip_strength, cfg.clip_mode, cfg.lr) == (1.25, 5.0, "teacher_ratio", 1e-5)
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.eps_low, cfg.eps_high) == (1.0, 1.0, 0, 0.2, 0.2)
    assert cfg.base is None and cfg.lora_r == 0
    # with the paper's base-neutral calibration (λ* = 1.22 at c = 5) the guard refuses λ = 1.25
    from listopd.util.errors import ListopdError

    with pytest.raises(ListopdError, match="above the predicted cliff"):
        cliff_check(config_from_dict(OPDConfig, {**read_yaml(str(ROOT / "configs" / "paper" /
                                                                 "opd_qwen3_1p7b_from_8b.yaml")),
                                                 "cliff_p": 0.99934, "cliff_b": 0.5}))


@pytest.mark.parametrize("name,fsdp", [("ddp_8gpu.yaml", False), ("fsdp_8gpu.yaml", True)])
def test_accelerate_config_loads(name, fsdp):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    path = ROOT / "configs" / "accelerate" / name
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "listopd", "opd"])
    args, _, _ = _validate_launch_command(args)
    assert args.num_processes == 8 and args.mixed_precision == "bf16"
    assert (args.use_fsdp, args.multi_gpu) == (fsdp, not fsdp)
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    if fsdp:
        assert env["ACCELERATE_USE_FSDP"] == "true"
        assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
        assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
        assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "Qwen3DecoderLayer"
        assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
        from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer  # the class named exists

        assert Qwen3DecoderLayer.__name__ == env["FSDP_TRANSFORMER_CLS_TO_WRAP"]
