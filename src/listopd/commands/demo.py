"""The main job: data → tokenizer → SFT teacher → SFT warm start → calibration → ListOPD below and above
the predicted λ* → evaluation → report, on the embedded synthetic data and the tiny presets.

Re-running continues an interrupted demo (finished stages are skipped); --out picks the folder.
"""

from __future__ import annotations

from listopd.util.config import add_config_arguments, load_config
from listopd.experiment.demo import DemoConfig


def add_arguments(parser) -> None:
    add_config_arguments(parser, DemoConfig)


def run(args) -> int:
    from listopd.experiment.demo import headline, run_demo

    cfg = load_config(DemoConfig, args)
    result = run_demo(cfg)
    print()
    print(headline(result))
    print(f"report: {result['report']}")
    return 0
