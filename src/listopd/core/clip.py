"""The clip modes of the ListOPD loss and the checks of its arguments, without torch (configs validate with
them before any model is loaded). What each mode caps: docs/method.md#clip-modes; the loss: core/loss.py."""

from __future__ import annotations

import math

import numpy as np

from listopd.util.errors import DomainError

CLIP_MODES = ("teacher_ratio", "two_sided", "base_ratio", "truncated_is", "dual_clip", "none")


def check_loss_args(reward_scale, clip_strength: float, clip_mode: str, eps_low: float, eps_high: float) -> None:
    """Refuse meaningless settings with the reason (shared by the loss and the trainer's config validation).
    `reward_scale` may be a number, an array or a CPU tensor of λ values."""
    if clip_mode not in CLIP_MODES:
        raise DomainError(f"clip_mode must be one of {', '.join(CLIP_MODES)}; got {clip_mode!r}")
    lam = np.asarray(reward_scale, dtype=np.float64)
    if not bool((np.isfinite(lam) & (lam > 0)).all()):
        raise DomainError(f"reward_scale (λ) must be a finite number > 0; got {reward_scale}")
    if clip_mode != "none" and not (math.isfinite(clip_strength) and clip_strength > 1):
        raise DomainError(f"clip_strength (c) must be a finite number > 1; got {clip_strength}")
    for name, eps in (("eps_low", eps_low), ("eps_high", eps_high)):
        if not (0 < eps < 1):
            raise DomainError(f"{name} (PPO ratio clip) must be in the open interval (0, 1); got {eps}")
