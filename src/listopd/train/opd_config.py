"""The ListOPD trainer's options (`listopd opd`, sweeps): one field each, its help beside it. Torch-free, so
that `--help`, sweep plans and pre-registration read it without loading a model. The trainer: train/opd.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from listopd.core.clip import CLIP_MODES, check_loss_args
from listopd.util.config import check_at_least, finite_positive, option, require

CLIFF_PREDICTORS = ("closed_form", "full_vocabulary")
ESTIMATORS = ("sampled", "expected")


@dataclass
class OPDConfig:
    # written into a run's config.json beside the options (train/opd.py: what the cliff check read); not an option
    RECORDED_KEYS: ClassVar[tuple[str, ...]] = ("cliff_check",)

    student: str = option(help="warm-start model folder (the student starts here)")
    teacher: str = option(help="teacher model folder")
    tasks: str = option(help="training task file (prompts)")
    out: str = option(help="run folder")
    base: str | None = option(None, "base/reference model π_B (default: a frozen copy of the student's warm start)")
    val_tasks: str | None = option(None, "validation task file")
    reward_scale: float = option(1.0, "λ, the reward extrapolation coefficient")
    clip_strength: float = option(5.0, "c, the importance-sampling clip strength")
    clip_mode: str = option("teacher_ratio", "what c caps: " + ", ".join(CLIP_MODES))
    estimator: str = option("sampled", "sampled: the advantage of the sampled token only (the paper's); expected: "
                                       "the same loss summed over the whole vocabulary at each sampled prefix, "
                                       "weighted by the student's probabilities (same expected gradient, far less "
                                       "noise; needs [batch, length, vocab] tables of teacher and base log-probs)")
    contract_aware: bool = option(False, "extrapolate only toward tokens that keep the output contract: at each "
                                         "sampled prefix, a contract-breaking token gets the plain OPD advantage "
                                         "(λ = 1)")
    eps_low: float = option(0.2, "PPO ratio clip below")
    eps_high: float = option(0.2, "PPO ratio clip above")
    steps: int = option(100, "optimiser steps (one rollout batch each, times ppo_epochs)", at_least=1)
    batch_size: int = option(8, "prompts per step (global)", at_least=1)
    micro_batch_size: int = option(8, "prompts per forward in each process", at_least=1)
    ppo_epochs: int = option(1, "optimiser steps per rollout batch", at_least=1)
    lr: float = option(1e-5, "peak learning rate (AdamW, betas 0.9/0.95)")
    weight_decay: float = option(0.0, "AdamW weight decay (matrices only)")
    warmup_steps: int = option(0, "linear learning-rate warm-up steps (0: none)", at_least=0)
    schedule: str = option("constant", "constant or cosine (decay to 10% of the peak after warm-up)")
    grad_clip: float = option(1.0, "gradient-norm clip")
    max_new_tokens: int = option(64, "completion length limit", at_least=1)
    temperature: float = option(1.0, "sampling temperature (1: unbiased)")
    top_p: float = option(1.0, "nucleus sampling (1: off)")
    top_k: int = option(0, "top-k sampling (0: off)", at_least=0)
    rollout_ahead: int = option(0, "0: each step samples and scores its rollout itself; 1: a worker process on "
                                   "its own core draws the next step's rollout from this step's weights and scores "
                                   "it under teacher and base while this step updates (one step off-policy, "
                                   "corrected as rollout_is_cap says; train/rollout_ahead.py)", at_least=0)
    rollout_is_cap: float = option(2.0, "with rollout_ahead 1 and the sampled estimator: each token's loss is "
                                        "weighted by min(π_student/π_sampler, this cap), truncated importance "
                                        "sampling (the expected estimator needs no weight)")
    sampler_threads: int = option(1, "torch CPU threads of the rollout_ahead worker process", at_least=1)
    eval_every: int = option(50, "validate every N steps (0: only at the end)", at_least=0)
    eval_tasks: int = option(64, "validation tasks used", at_least=1)
    eval_temperature: float = option(0.0, "validation decoding: 0 greedy; > 0 one sample per task at this "
                                          "temperature, from a fixed seed (the same draws in every run)")
    role_probe_tasks: int = option(16, "validation tasks whose reference outputs the student's keeping mass per "
                                       "role is measured on at each evaluation, logged as keep/<role> (0: off)",
                                   at_least=0)
    save_every: int = option(50, "checkpoint every N steps", at_least=1)
    seed: int = option(0, "seed of the data order, the rollout sampler and any LoRA initialisation", at_least=0)
    bf16: bool = option(False, "bfloat16 autocast")
    bf16_sampling: bool = option(True, "with bf16: sample rollouts and validate under bf16 autocast too (false: in "
                                       "float32 from the same master weights, faster on CPUs where autocast slows "
                                       "decoding; the update and π_old stay bf16). The rollout_ahead worker "
                                       "samples in float32 either way: its copy of the student reaches the worker "
                                       "process without accelerate's autocast forward")
    lora_r: int = option(0, "LoRA rank (0: full fine-tuning)", at_least=0)
    lora_alpha: int = option(16, "LoRA scaling α (the update is scaled by α / r)", at_least=1)
    threads: int = option(0, "torch CPU threads (0: torch's default, one per core, less the "
                                    "rollout_ahead worker's sampler_threads)", at_least=0)
    prompt_cache_mb: int = option(4096, "MiB (per frozen model, held in CPU memory) of prompt keys and values "
                                        "the teacher and base keep, so that a prompt seen again is scored over "
                                        "its completion only (0: whole-sequence forwards every step)",
                                  at_least=0)
    cliff_p: float | None = option(None, "teacher modal mass p for the cliff guard")
    cliff_b: float | None = option(None, "warm-start modal mass b")
    calibration: str | None = option(None, "calibration.json (version 1, top-level p and b) instead of "
                                           "cliff_p/cliff_b")
    cliff_predictor: str = option("closed_form", "what the cliff check refuses above: closed_form (λ*(p, b, c)) or "
                                                 "full_vocabulary (the calibration file's full-vocabulary onset for "
                                                 "this objective: contract-aware's, base_ratio's rest point, else "
                                                 "q_λ's; needs calibration)")
    allow_above_cliff: bool = option(False, "train at λ ≥ λ*(p,b,c) anyway")
    guard_margin: float | None = option(None, "stop when the rollout parse rate falls this far below its best "
                                              "(off when unset)")
    guard_window: int = option(10, "steps averaged for the guard's parse rate", at_least=1)

    def validate(self) -> None:
        check_at_least(self)
        check_loss_args(self.reward_scale, self.clip_strength, self.clip_mode, self.eps_low, self.eps_high)
        require(self.estimator in ESTIMATORS,
                f"estimator must be one of {', '.join(ESTIMATORS)}; got {self.estimator!r}")
        require(self.estimator == "sampled" or (self.ppo_epochs == 1 and self.clip_mode != "truncated_is"),
                "estimator expected needs ppo_epochs 1 and a clip_mode other than truncated_is (it sums over "
                "the vocabulary under the current student, so there is no sampler mismatch to correct)")
        require(finite_positive(self.lr), f"lr must be a finite number > 0; got {self.lr}")
        require(self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine; got {self.schedule}")
        require(finite_positive(self.temperature), "temperature must be > 0")
        require(self.eval_temperature >= 0 and math.isfinite(self.eval_temperature),
                f"eval_temperature must be ≥ 0 (0: greedy); got {self.eval_temperature}")
        require(0 < self.top_p <= 1, f"top_p must be in (0, 1]; got {self.top_p}")
        require(self.grad_clip > 0, "grad_clip must be > 0")
        require((self.cliff_p is None) == (self.cliff_b is None),
                "cliff_p and cliff_b go together: give both or neither")
        require(not (self.calibration and self.cliff_p is not None),
                "give either calibration or cliff_p/cliff_b, not both")
        require(self.cliff_predictor in CLIFF_PREDICTORS,
                f"cliff_predictor must be one of {', '.join(CLIFF_PREDICTORS)}; got {self.cliff_predictor!r}")
        require(self.cliff_predictor == "closed_form" or self.calibration,
                "cliff_predictor full_vocabulary reads the calibration file: give calibration")
        require(self.guard_margin is None or 0 < self.guard_margin < 1,
                f"guard_margin must be in (0, 1); got {self.guard_margin}")
        require(self.rollout_ahead <= 1, f"rollout_ahead must be 0 or 1; got {self.rollout_ahead}")
        require(self.rollout_is_cap > 1 and math.isfinite(self.rollout_is_cap),
                f"rollout_is_cap must be a finite number > 1; got {self.rollout_is_cap}")
        require(not (self.reward_scale == 1.0 and self.base is not None),
                "base is ignored at reward_scale 1 (plain OPD: π_B cancels); drop it or set λ ≠ 1")

    def cliff_pb(self) -> tuple[float, float] | None:
        """(p, b) for the cliff check: cliff_p/cliff_b, or the calibration file's; None when neither is given."""
        if self.cliff_p is not None:
            return self.cliff_p, self.cliff_b
        if self.calibration:
            from listopd.train.cliff import read_calibration_file

            data = read_calibration_file(self.calibration)
            return float(data["p"]), float(data["b"])
        return None
