"""Simulator of the single-position reduction (docs/method.md#the-simulator): does the cliff land at λ*(p, b, c)?

One categorical position with V = n_modal + n_tail tokens. The modal (contract-keeping) class holds the
teacher mass p and the base mass b, spread evenly over its n_modal tokens (n_modal > 1 is the K-ary case,
e.g. K candidate ids that all keep the contract); the tail holds the rest, spread evenly over n_tail tokens.
The student's logits start at the base (the warm start is the base, as in the trainer's default) and are
trained by `listopd.core.loss.listopd_loss` — the trainer's own loss — with SGD or Adam.

Two dynamics:
  "exact"    the expected policy gradient: every token is "sampled" with weight π_old(y) (no noise);
  "sampled"  `samples_per_step` tokens drawn from the student each step, as training really sees them.

All runs of a grid (λ × seeds) are trained at once as rows of one [runs, V] logit tensor; their losses
are independent, so each row follows exactly its own dynamics.

Onset (locked here, used by every report): for one seed, the onset λ is the smallest λ on the grid whose
final student modal mass has *overshot* the extrapolated fixed point by more than `tolerance` in logit
space,  logit(q_final) − logit(q_λ) > tolerance  (default 0.5 nats, i.e. a tail 1.65× thinner than the
fixed point's). Below λ* a converged run sits on q_λ (departure ≈ 0; an unconverged one lags, departure
< 0); above λ* the capped tail has no equilibrium and q runs past q_λ toward 1. A seed with no such λ has
no onset (None). The onset always comes with the step budget: convergence near q → 1 is slow (the
gradient scales with q(1−q)), so a finite budget shows the departure later than λ*.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from listopd.core import theory
from listopd.util.errors import DomainError
from listopd.core.clip import CLIP_MODES
from listopd.core.loss import listopd_loss

DYNAMICS = ("exact", "sampled")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class SimConfig:
    p: float = 0.999  # teacher mass on the modal class
    b: float = 0.9  # base (= warm start) mass on the modal class
    c: float = 3.0  # clip strength
    lambdas: tuple[float, ...] = ()  # empty: a grid around λ* (see default_grid)
    seeds: int = 3
    n_modal: int = 1
    n_tail: int = 4
    clip_mode: str = "teacher_ratio"
    contract_aware: bool = False  # λ only on the modal (contract-keeping) class; the tail gets λ = 1
    dynamics: str = "exact"
    samples_per_step: int = 256
    steps: int = 4000
    optimizer: str = "sgd"
    lr: float = 2.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    tolerance: float = 0.5

    def __post_init__(self):
        theory.lambda_star(self.p, self.b, self.c)  # raises DomainError on bad p, b, c
        checks = [
            (self.dynamics in DYNAMICS, f"dynamics must be one of {DYNAMICS}; got {self.dynamics!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}"),
            (self.clip_mode in CLIP_MODES, f"clip_mode must be one of {CLIP_MODES}; got {self.clip_mode!r}"),
            (self.seeds >= 1, f"seeds must be ≥ 1; got {self.seeds}"),
            (self.n_modal >= 1, f"n_modal must be ≥ 1; got {self.n_modal}"),
            (self.n_tail >= 1, f"n_tail must be ≥ 1; got {self.n_tail}"),
            (self.steps >= 1, f"steps must be ≥ 1; got {self.steps}"),
            (self.samples_per_step >= 1, f"samples_per_step must be ≥ 1; got {self.samples_per_step}"),
            (self.lr > 0, f"lr must be > 0; got {self.lr}"),
            (self.tolerance > 0, f"tolerance must be > 0; got {self.tolerance}"),
            (all(lam > 0 and math.isfinite(lam) for lam in self.lambdas),
             f"every λ must be a finite number > 0; got {list(self.lambdas)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DomainError(message)

    @property
    def lambda_star(self) -> float:
        return float(theory.lambda_star(self.p, self.b, self.c))

    def grid(self) -> np.ndarray:
        return np.asarray(self.lambdas, dtype=float) if self.lambdas else default_grid(self.lambda_star)


def default_grid(lambda_star: float, n: int = 13) -> np.ndarray:
    """λ from 1 to about 2λ* − 1 (λ* in the middle), n points."""
    hi = 2 * lambda_star - 1 if math.isfinite(lambda_star) else 2.0
    return np.round(np.linspace(1.0, hi, n), 4)


@dataclass
class SimResult:
    config: SimConfig
    lambdas: np.ndarray  # [L]
    modal_mass: np.ndarray  # [L, S] final student modal mass q per λ and seed
    modal_tail: np.ndarray  # [L, S] final 1 − q (computed from the logits, exact near 1)
    fixed_point: np.ndarray  # [L] q_λ
    fixed_point_tail: np.ndarray  # [L] 1 − q_λ
    departure: np.ndarray  # [L, S] logit(q_final) − logit(q_λ)
    left_clip_safe: np.ndarray  # [L, S] bool: (1 − p)/(1 − q_final) > c
    onsets: list = field(default_factory=list)  # per seed: onset λ or None

    @property
    def lambda_star(self) -> float:
        return self.config.lambda_star

    def onset_interval(self) -> tuple[float | None, float | None]:
        found = [o for o in self.onsets if o is not None]
        return (min(found), max(found)) if found else (None, None)

    def to_dict(self) -> dict:
        lo, hi = self.onset_interval()
        rows = []
        for i, lam in enumerate(self.lambdas):
            rows.append({
                "lambda": float(lam),
                "modal_mass_mean": float(self.modal_mass[i].mean()),
                "modal_mass_std": float(self.modal_mass[i].std()),
                "tail_mass_mean": float(self.modal_tail[i].mean()),
                "fixed_point": float(self.fixed_point[i]),
                "fixed_point_tail": float(self.fixed_point_tail[i]),
                "departure_mean": float(self.departure[i].mean()),
                "left_clip_safe_frac": float(self.left_clip_safe[i].mean()),
            })
        return {
            "config": asdict(self.config),
            "lambda_star": self.lambda_star,
            "lambda_star_base_neutral": float(theory.lambda_star_base_neutral(self.config.p, self.config.c)),
            "onset_definition": f"smallest grid λ with logit(q_final) − logit(q_λ) > {self.config.tolerance}",
            "onsets": self.onsets,
            "onset_interval": [lo, hi],
            "steps": self.config.steps,
            "rows": rows,
        }


def _initial_logits(n_modal: int, n_tail: int, modal_mass: float) -> torch.Tensor:
    """Logits of a distribution with `modal_mass` spread evenly over the first n_modal tokens."""
    modal = math.log(modal_mass / n_modal)
    tail = math.log1p(-modal_mass) - math.log(n_tail)
    return torch.tensor([modal] * n_modal + [tail] * n_tail, dtype=torch.float64)


def _modal_mass_and_tail(logits: torch.Tensor, n_modal: int) -> tuple[torch.Tensor, torch.Tensor]:
    lse_all = torch.logsumexp(logits, dim=-1)
    log_q = torch.logsumexp(logits[:, :n_modal], dim=-1) - lse_all
    log_tail = torch.logsumexp(logits[:, n_modal:], dim=-1) - lse_all
    return log_q.exp(), log_tail.exp()


def simulate(config: SimConfig, progress=None) -> SimResult:
    """Train every (λ, seed) row for `config.steps` steps; return final masses, departures and onsets."""
    lambdas = config.grid()
    n_l, n_s = len(lambdas), config.seeds
    n_runs, v = n_l * n_s, config.n_modal + config.n_tail

    lp_teacher_vocab = torch.log_softmax(_initial_logits(config.n_modal, config.n_tail, config.p), -1)
    lp_base_vocab = torch.log_softmax(_initial_logits(config.n_modal, config.n_tail, config.b), -1)
    logits = lp_base_vocab.repeat(n_runs, 1).clone().requires_grad_(True)
    reward_scale = torch.tensor(np.repeat(lambdas, n_s), dtype=torch.float64).unsqueeze(1)  # [runs, 1]

    if config.optimizer == "sgd":
        opt = torch.optim.SGD([logits], lr=config.lr)
    else:
        opt = torch.optim.Adam([logits], lr=config.lr)
    gen = torch.Generator().manual_seed(0)  # one stream; every row (λ, seed) draws its own samples

    for step in range(config.steps):
        lp_vocab = torch.log_softmax(logits, dim=-1)
        if config.dynamics == "exact":
            tokens = torch.arange(v).expand(n_runs, v)
            mask = lp_vocab.detach().exp()  # weight each token by its probability: the expectation
            num_tokens = 1.0
        else:
            probs = lp_vocab.detach().exp()
            tokens = torch.multinomial(probs, config.samples_per_step, replacement=True, generator=gen)
            mask = torch.ones(n_runs, config.samples_per_step, dtype=torch.float64)
            num_tokens = float(config.samples_per_step)
        lp_new = lp_vocab.gather(1, tokens)
        out = listopd_loss(
            lp_new, lp_new.detach(), lp_teacher_vocab[tokens], lp_base_vocab[tokens], mask,
            reward_scale=reward_scale, clip_strength=config.c, clip_mode=config.clip_mode,
            eps_low=config.eps_low, eps_high=config.eps_high, num_tokens=num_tokens,
            keep=tokens < config.n_modal if config.contract_aware else None)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, config.steps)

    with torch.no_grad():
        q, tail = _modal_mass_and_tail(logits, config.n_modal)
    q = q.numpy().reshape(n_l, n_s)
    tail = tail.numpy().reshape(n_l, n_s)
    fp_tail = np.asarray(theory.fixed_point_tail(lambdas, config.p, config.b), dtype=float)
    fp = 1.0 - fp_tail
    # logit(q) = log q − log(1 − q), from the tail so it stays exact as q → 1
    departure = (np.log(q) - np.log(tail)) - (np.log(fp) - np.log(fp_tail))[:, None]
    left = (1.0 - config.p) / tail > config.c
    onsets = []
    for s in range(n_s):
        hit = np.nonzero(departure[:, s] > config.tolerance)[0]
        onsets.append(float(lambdas[hit[0]]) if len(hit) else None)
    return SimResult(config, lambdas, q, tail, fp, fp_tail, departure, left, onsets)


def plot(results: "SimResult | list[SimResult]", path: str) -> None:
    """One panel per result: tail mass 1 − q against λ (log scale) for every seed, the fixed point's tail,
    the clip-safe boundary (1 − p)/c, λ* and the observed onset interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = results if isinstance(results, list) else [results]
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.3), squeeze=False)
    for ax, result in zip(axes[0], results):
        cfg = result.config
        for s in range(cfg.seeds):
            ax.plot(result.lambdas, result.modal_tail[:, s], "o", ms=4, alpha=0.6, color="C0",
                    label="trained student (each seed)" if s == 0 else None)
        ax.plot(result.lambdas, result.fixed_point_tail, "-", color="C1", label="fixed point 1 − q_λ")
        ax.axhline((1 - cfg.p) / cfg.c, color="C2", ls="--", label="clip-safe boundary (1 − p)/c")
        ax.axvline(result.lambda_star, color="C3", ls=":", label=f"λ*(p,b,c) = {result.lambda_star:.3f}")
        lo, hi = result.onset_interval()
        if lo is not None:
            ax.axvspan(lo - 0.002, hi + 0.002, color="C3", alpha=0.15,
                       label=f"observed onset [{lo:g}, {hi:g}]")
        ax.set_yscale("log")
        ax.set_xlabel("reward extrapolation λ")
        ax.set_ylabel("student tail mass 1 − q (log scale)")
        ax.set_title(f"p={cfg.p}, b={cfg.b}, c={cfg.c:g}\n{cfg.clip_mode}, {cfg.dynamics}, "
                     f"{cfg.optimizer} lr={cfg.lr:g}, {cfg.steps} steps", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
