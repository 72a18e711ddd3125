"""listopd: on-policy distillation with reward extrapolation, and the closed-form extrapolation cliff.

The public Python API (README "Use from Python"). Names load lazily, on first use, so `import listopd` stays
light (no torch until a name that needs it is touched):

    theory      lambda_star, lambda_star_base_neutral, fixed_point, clip_safe_boundary
    loss        listopd_loss, listopd_expected_loss, CLIP_MODES
    tasks       Task, Candidate, read_tasks, write_tasks, make_synth_tasks, RankingContract, score
    models      train_tokenizer, task_texts, build_model, load_model, load_tokenizer
    training    SFTConfig, run_sft, OPDConfig, run_opd, evaluate, generate_outputs
    experiments calibrate_models, calibrate, load_sweep, run_sweep
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "lambda_star": "listopd.core.theory", "lambda_star_base_neutral": "listopd.core.theory",
    "fixed_point": "listopd.core.theory", "clip_safe_boundary": "listopd.core.theory",
    "listopd_loss": "listopd.core.loss", "listopd_expected_loss": "listopd.core.loss",
    "CLIP_MODES": "listopd.core.clip",
    "Task": "listopd.task.tasks", "Candidate": "listopd.task.tasks", "read_tasks": "listopd.task.tasks",
    "write_tasks": "listopd.task.tasks", "make_synth_tasks": "listopd.task.data.synth",
    "RankingContract": "listopd.task.contract", "score": "listopd.task.metrics",
    "train_tokenizer": "listopd.task.tokenizer", "task_texts": "listopd.task.tokenizer",
    "build_model": "listopd.train.models", "load_model": "listopd.train.models",
    "load_tokenizer": "listopd.train.models",
    "SFTConfig": "listopd.train.sft_config", "run_sft": "listopd.train.sft",
    "OPDConfig": "listopd.train.opd_config", "run_opd": "listopd.train.opd",
    "evaluate": "listopd.train.evaluation", "generate_outputs": "listopd.train.evaluation",
    "calibrate_models": "listopd.experiment.calibrate", "calibrate": "listopd.experiment.calibrate",
    "load_sweep": "listopd.experiment.sweep", "run_sweep": "listopd.experiment.sweep",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'listopd' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(__all__)
