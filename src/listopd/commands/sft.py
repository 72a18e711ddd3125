"""Supervised fine-tuning (completion-only loss) on a task file: makes the teacher and the warm start.

Options come from --config FILE.yaml and/or flags (flags win). A run folder that already holds
checkpoints is resumed. Example:

    listopd sft --model tiny-teacher --tokenizer runs/tok --tasks data/train.jsonl \\
        --val-tasks data/validation.jsonl --steps 400 --out runs/teacher
"""

from __future__ import annotations

import json

from listopd.util.config import add_config_arguments, load_config
from listopd.train.sft_config import SFTConfig


def add_arguments(parser) -> None:
    add_config_arguments(parser, SFTConfig)


def run(args) -> int:
    from listopd.train.sft import run_sft

    cfg = load_config(SFTConfig, args)
    summary = run_sft(cfg)
    print(json.dumps(summary, indent=1))
    print(f"model: {cfg.out}/final")
    return 0
