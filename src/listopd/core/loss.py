"""The ListOPD loss: per-token extrapolated advantage, importance-sampling clip c, PPO surrogate.

Pure functions of per-token log-probabilities ([batch, time] tensors of the *sampled* tokens); no model
code. The trainer and the simulator both call `listopd_loss`; nothing else may re-implement the loss.

Notation (docs/method.md#the-objective), for a sampled token y_t:
    lp_new  = log π_θ(y_t)      current student, carries the gradient
    lp_old  = log π_old(y_t)    student that produced the rollout (detached)
    lp_t    = log π_T(y_t)      teacher
    lp_b    = log π_B(y_t)      base / reference (default: the frozen warm start)
    λ       = reward_scale      (1 = plain OPD, > 1 = extrapolation)

Advantage (stop-gradient, no normalisation):
    A_t = λ·lp_t − (λ−1)·lp_b − lp_old = λ·(lp_t − lp_old) + (1−λ)·(lp_b − lp_old)
At λ = 1 the base cancels and A_t = lp_t − lp_old, the plain OPD reward.

Clip strength c > 1, by `clip_mode`:

  "teacher_ratio"  (default) cap the teacher/student likelihood ratio inside the advantage:
        A_t = λ·min(lp_t − lp_old, log c) + (1−λ)·(lp_b − lp_old)
     This is the ratio the closed form of λ* is about ("the teacher-to-student likelihood ratio on the
     tail class is capped at c", docs/method.md#clip-modes): above λ*, the fixed point q_λ needs a tail ratio
     (1−p)/(1−q) > c, the cap removes the reward that would hold the tail there, and the tail runs away.

  "two_sided"      cap the teacher/student log-ratio on both sides, |lp_t − lp_old| ≤ log c:
        A_t = λ·clamp(lp_t − lp_old, −log c, log c) + (1−λ)·(lp_b − lp_old)
     The negative side is otherwise unbounded: a token the teacher gives −50 nats weighs −50·λ.

  "base_ratio"     the teacher_ratio cap, and the base term's student/base log-ratio capped on both sides:
        A_t = λ·min(lp_t − lp_old, log c) + (λ−1)·clamp(lp_old − lp_b, −log c, log c)
     Uncapped, the base term rewards any token the student already prefers to the base by (λ−1) times that
     preference (round 1's failure-role cue: repeated ids in the last slot grew with λ).

  "truncated_is"   truncated importance sampling between the sampler and the trainer (verl, G-OPD):
        w_t = min(exp(lp_old − lp_sampler), c)   (detached),   loss_t = w_t · ppo_loss_t
     with lp_sampler the log-prob the rollout engine reported. It binds only when sampler ≠ trainer;
     without `lp_sampler` the weight is 1 everywhere.

  "dual_clip"      dual-clip PPO (Ye et al. 2020) with constant c: for A_t < 0 the surrogate is
        max(min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A), c·A),  bounding the loss of a token whose ratio exploded.

  "none"           no cap: A_t as above, plain PPO surrogate.

Stale rollouts (`rollout_is_cap`, the trainer's `rollout_ahead: 1`): the rollout was drawn by the previous
step's student, so each token's loss is weighted by the truncated importance ratio between the current student
and the sampler, w_t = min(exp(lp_old − lp_sampler), rollout_is_cap) (detached), whatever the clip mode; the
expected estimator needs no such weight (its sum over the vocabulary is taken under the current student) and
only logs it. Logged: is_weight_mean, is_cap_frac and the sampler→trainer KL on the samples (sampler_kl_k3).

Contract-aware extrapolation (`keep`, issue 19): λ applies only to tokens that keep the output contract at
their prefix; a token that breaks it gets the plain OPD advantage (λ = 1), A_t = lp_t − lp_old, so
extrapolation never boosts a contract-breaking token. Its fixed point per position: q(y) ∝ π_T(y)^λ·π_B(y)^(1−λ)
on the keeping tokens and q(y) ∝ π_T(y) on the others, with one normaliser (core/fixed_points.py).

Surrogate (PPO, separate low/high ε), with ρ_t = exp(lp_new − lp_old):
    loss_t = −min(ρ_t·A_t, clip(ρ_t, 1−ε_low, 1+ε_high)·A_t)
With one optimiser step per rollout ρ = 1 and the gradient is −A_t·∇lp_new: the plain policy gradient.

Aggregation: token mean normalised by the *global* number of completion tokens,
    loss = Σ_t mask_t·w_t·loss_t / num_tokens,
so that gradient accumulation over micro-batches (each passing the same global `num_tokens`) gives the
gradient of one big batch. Under DDP (gradients averaged over ranks) pass global_tokens / world_size.
`mask` may hold float weights (the simulator's exact mode passes token probabilities).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from listopd.core.clip import check_loss_args



@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable
    advantages: torch.Tensor  # [B, T], detached
    stats: dict[str, float]  # masked summaries for logging


ADVANTAGE_CAPS = {  # clip mode -> (teacher log-ratio cap, base log-ratio cap): None, "above" or "both"
    "teacher_ratio": ("above", None), "two_sided": ("both", None), "base_ratio": ("above", "both"),
}


def _cap(x: torch.Tensor, log_c: float, side: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if side is None:
        return x, torch.zeros_like(x, dtype=torch.bool)
    if side == "above":
        return x.clamp(max=log_c), x > log_c
    return x.clamp(-log_c, log_c), x.abs() > log_c


def extrapolated_advantage(lp_teacher: torch.Tensor, lp_base: torch.Tensor, lp_old: torch.Tensor, *,
                           reward_scale: float | torch.Tensor, clip_strength: float = math.inf,
                           clip_mode: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """A_t = λ·(lp_t − lp_old) + (1−λ)·(lp_b − lp_old), with the log-ratios capped at ±log c as `clip_mode`
    says (ADVANTAGE_CAPS; other modes leave the advantage uncapped).

    `reward_scale` is a number or a tensor broadcastable to [B, T] (e.g. [B, 1]: one λ per sequence, which
    the simulator uses to train a whole λ grid at once). Returns (advantage, cap_binds), both detached;
    cap_binds is a bool tensor (all False without a cap).
    """
    lam = reward_scale
    teacher_side, base_side = ADVANTAGE_CAPS.get(clip_mode, (None, None))
    log_c = math.log(clip_strength) if teacher_side or base_side else math.inf
    teacher_log_ratio, cap_binds = _cap((lp_teacher - lp_old).detach(), log_c, teacher_side)
    base_log_ratio, base_binds = _cap((lp_base - lp_old).detach(), log_c, base_side)
    if isinstance(lam, (int, float)) and lam == 1.0:  # plain OPD: the base cancels (need not be finite)
        return teacher_log_ratio, cap_binds
    return lam * teacher_log_ratio + (1.0 - lam) * base_log_ratio, cap_binds | base_binds


def listopd_loss(lp_new: torch.Tensor, lp_old: torch.Tensor, lp_teacher: torch.Tensor,
                 lp_base: torch.Tensor, mask: torch.Tensor, *, reward_scale: float | torch.Tensor,
                 clip_strength: float = 5.0, clip_mode: str = "teacher_ratio",
                 eps_low: float = 0.2, eps_high: float = 0.2,
                 lp_sampler: torch.Tensor | None = None,
                 num_tokens: float | torch.Tensor | None = None,
                 keep: torch.Tensor | None = None, rollout_is_cap: float | None = None) -> LossOutput:
    """The ListOPD loss for one (micro-)batch of sampled tokens; see the module docstring.

    All tensors are [B, T] log-probs of the sampled tokens; `mask` is 1 on completion tokens (or float
    weights). `num_tokens` is the normaliser (default: mask.sum() of this batch). `keep` (bool [B, T]):
    contract-aware extrapolation — tokens where it is False get λ = 1. `rollout_is_cap` (with `lp_sampler`):
    the rollout is stale, weight each token by min(π_old/π_sampler, rollout_is_cap).
    """
    check_loss_args(reward_scale, clip_strength, clip_mode, eps_low, eps_high)
    if keep is not None:
        lam = torch.as_tensor(reward_scale, dtype=lp_old.dtype, device=lp_old.device)
        reward_scale = torch.where(keep.to(lp_old.device), lam, torch.ones_like(lam))
    lp_old = lp_old.detach()
    mask = mask.to(lp_new.dtype)
    adv, cap_binds = extrapolated_advantage(
        lp_teacher, lp_base, lp_old, reward_scale=reward_scale, clip_strength=clip_strength, clip_mode=clip_mode)

    ratio = torch.exp(lp_new - lp_old)
    clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    surrogate = torch.minimum(ratio * adv, clipped_ratio * adv)
    ppo_clipped = (ratio * adv) > (clipped_ratio * adv)  # the clipped branch was taken

    if clip_mode == "dual_clip":
        dual_binds = (adv < 0) & (surrogate < clip_strength * adv)
        surrogate = torch.where(adv < 0, torch.maximum(surrogate, clip_strength * adv), surrogate)
        cap_binds = dual_binds

    weights, stale = torch.ones_like(lp_old), None
    if clip_mode == "truncated_is" and lp_sampler is not None:
        weights, cap_binds = _truncated_is(lp_old, lp_sampler, clip_strength)
    elif rollout_is_cap is not None and lp_sampler is not None:
        weights, is_binds = _truncated_is(lp_old, lp_sampler, rollout_is_cap)
        stale = (weights, is_binds, lp_old - lp_sampler.detach())

    per_token = -weights * surrogate
    if num_tokens is None:
        num_tokens = mask.sum()
    loss = (per_token * mask).sum() / torch.as_tensor(num_tokens, dtype=lp_new.dtype).clamp(min=1e-12)
    return LossOutput(loss=loss, advantages=adv, stats=_stats(adv, cap_binds, ppo_clipped, mask,
                                                               lp_teacher, lp_old, stale))


def _truncated_is(lp_old: torch.Tensor, lp_sampler: torch.Tensor, cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(min(π_old/π_sampler, cap), where the cap binds), detached."""
    ratio = torch.exp(lp_old - lp_sampler.detach())
    return ratio.clamp(max=cap), ratio > cap


def _stats(adv, cap_binds, ppo_clipped, mask, lp_teacher, lp_old, stale=None) -> dict[str, float]:
    """Masked summaries: advantage moments, clip fractions, teacher KL estimators on the samples; with a
    stale rollout (weights, where their cap binds, log π_old/π_sampler), the staleness."""
    with torch.no_grad():
        on = mask > 0
        n = int(on.sum())
        if n == 0:
            return {"tokens": 0.0}
        a = adv[on].double()
        log_r = (lp_teacher - lp_old)[on].double()  # log π_T/π_S on student samples
        staleness = {}
        if stale is not None:
            weights, binds, log_is = (x[on].double() for x in stale)
            # KL(π_sampler || π_old) on the sampler's samples: k3 with r = π_old/π_sampler
            staleness = {"is_weight_mean": float(weights.mean()), "is_cap_frac": float(binds.mean()),
                         "sampler_kl_k3": float((torch.expm1(log_is) - log_is).mean())}
        return {**staleness,
            "tokens": float(n),
            "adv_mean": float(a.mean()), "adv_std": float(a.std(unbiased=False)),
            "adv_min": float(a.min()), "adv_max": float(a.max()),
            "cap_bind_frac": float(cap_binds[on].double().mean()),
            "ppo_clip_frac": float(ppo_clipped[on].double().mean()),
            # KL(π_S || π_T) estimators on student samples: k1 = −log r, k3 = r − 1 − log r (Schulman)
            "teacher_kl_k1": float((-log_r).mean()),
            "teacher_kl_k3": float((torch.expm1(log_r) - log_r).mean()),
        }


def listopd_expected_loss(table_new: torch.Tensor, table_teacher: torch.Tensor, table_base: torch.Tensor,
                          tokens: torch.Tensor, mask: torch.Tensor, *, reward_scale: float | torch.Tensor,
                          clip_strength: float = 5.0, clip_mode: str = "teacher_ratio",
                          eps_low: float = 0.2, eps_high: float = 0.2,
                          num_tokens: float | torch.Tensor | None = None,
                          keep: torch.Tensor | None = None, lp_sampler: torch.Tensor | None = None,
                          rollout_is_cap: float | None = None) -> LossOutput:
    """The ListOPD loss with the sampled token at each position replaced by its expectation under the
    student (a Rao–Blackwellised estimator).

    At every sampled prefix, `listopd_loss` is applied to *every* vocabulary entry y with weight
    π_S(y | prefix) (detached) instead of to the one sampled token: the expected gradient is the same,
        Σ_t Σ_y π_S(y)·A_t(y)·∇log π_S(y)  =  E_{y_t ~ π_S}[ A_t(y_t)·∇log π_S(y_t) ],
    with A_t(y) built exactly as for a sampled token (λ, the teacher-ratio cap at log c, the base term),
    but the noise of drawing one token per position is gone. The prefixes are still sampled.
    Tables are [B, T, V] log-probs (`listopd.train.rollout.completion_logprob_table`; `table_new` carries the
    gradient); `tokens` [B, T] are the sampled ids, used only for the logged statistics, which describe
    the sampled tokens as in `listopd_loss`. Valid for one optimiser step per rollout (ratio 1).
    `keep` (bool [B, T, V]): contract-aware extrapolation, λ only on the tokens that keep the contract.
    `lp_sampler`, `rollout_is_cap` (a stale rollout): logged only — the sum over the vocabulary is already
    under the current student, so the sampled token needs no importance weight.
    """
    if clip_mode == "truncated_is":
        raise ValueError("the expected estimator has no sampler mismatch to correct: use another clip_mode")
    width = min(table_new.shape[-1], table_teacher.shape[-1], table_base.shape[-1])
    table_new, table_teacher, table_base = (x[..., :width] for x in (table_new, table_teacher, table_base))
    b, t, v = table_new.shape
    mask = mask.to(table_new.dtype)
    weight = mask[..., None] * table_new.detach().exp()
    flat = lambda x: x.reshape(b, t * v)  # noqa: E731
    kwargs = dict(reward_scale=reward_scale, clip_strength=clip_strength, clip_mode=clip_mode, eps_low=eps_low,
                  eps_high=eps_high, num_tokens=num_tokens if num_tokens is not None else mask.sum())
    full = listopd_loss(flat(table_new), flat(table_new.detach()), flat(table_teacher), flat(table_base),
                        flat(weight), **kwargs, keep=None if keep is None else flat(keep[..., :width]))
    pick = lambda x: x.detach().gather(-1, tokens[..., None]).squeeze(-1)  # noqa: E731
    lp = pick(table_new)
    sampled = listopd_loss(lp, lp, pick(table_teacher), pick(table_base), mask, **kwargs,
                           keep=None if keep is None else pick(keep[..., :width]), lp_sampler=lp_sampler,
                           rollout_is_cap=rollout_is_cap)
    return LossOutput(loss=full.loss, advantages=sampled.advantages, stats=sampled.stats)
