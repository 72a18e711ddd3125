"""ListOPD: on-policy distillation of a warm-start student from a teacher, with reward extrapolation λ
(`--reward-scale`) and clip strength c (`--clip-strength`, `--clip-mode`).

Options come from --config FILE.yaml and/or flags (flags win). A run folder that already holds
checkpoints is resumed. With --cliff-p/--cliff-b (or --calibration FILE) λ ≥ λ*(p,b,c) is refused unless
--allow-above-cliff. Example:

    listopd opd --student runs/warm/final --teacher runs/teacher/final --tasks data/train.jsonl \\
        --val-tasks data/validation.jsonl --reward-scale 1.2 --clip-strength 5 --steps 200 --out runs/opd
"""

from __future__ import annotations

import json

from listopd.util.config import add_config_arguments, load_config
from listopd.train.opd_config import OPDConfig


def add_arguments(parser) -> None:
    add_config_arguments(parser, OPDConfig)


def run(args) -> int:
    from listopd.train.opd import run_opd

    cfg = load_config(OPDConfig, args)
    summary = run_opd(cfg)
    print(json.dumps(summary, indent=1))
    print(f"model: {cfg.out}/final")
    return 0
