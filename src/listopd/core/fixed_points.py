"""Where the expected ListOPD update comes to rest at one position, per clip mode — the fixed point each mode
implies, computed with the loss's own advantage (`core.loss.extrapolated_advantage`), not a re-derivation.

The closed form lumps a position's tokens into two classes: the contract-keeping (modal) class with teacher
mass p, base mass b and student mass q, and the tail. With one optimiser step per rollout the expected
gradient on the modal logit z = logit(q) is  dz ∝ q(1−q)·(A_modal(q) − A_tail(q)),  so the student rests where
g(q) = A_modal − A_tail = 0, a rest point is stable where g falls through 0 as q grows, and with no stable
rest point q runs to the end g pushes it to (q → 1: the tail vanishes; q → 0: the contract is lost).

Uncapped (`none`) the rest point is q_λ, logit q_λ = λ·logit p + (1−λ)·logit b, at every λ (core/theory.py).
A cap changes the advantage only where it binds, so q_λ stays the rest point while no cap binds at q_λ; what
happens once one does is what `rest_points` computes (docs/method.md#clip-modes; `scripts/clip_mode_fixed_points.py`
prints the table).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from listopd.core.loss import extrapolated_advantage

def _logsumexp(x: np.ndarray, axis=None):
    """log Σ exp(x), shifted by the max (−inf where every entry is −inf). np.logaddexp.reduce gives the same to
    ~1e-15 but is several times slower on a vocabulary row, and calibrate calls this ~10⁶ times."""
    if axis is None:  # the hot path: one row, plain floats
        m = float(x.max())
        return m if m == -math.inf else m + math.log(float(np.exp(x - m).sum()))  # the sum is ≥ 1: its max's term
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m, axis=axis)


Z_RANGE = 40.0  # logit(q) in [−40, 40]: tails down to ~4e-18


def advantage_gap(q_logit: np.ndarray, lam: float, p: float, b: float, c: float, clip_mode: str) -> np.ndarray:
    """g = A_modal − A_tail at modal-class logits `q_logit` (float64)."""
    z = torch.as_tensor(np.asarray(q_logit, dtype=np.float64))
    log_q, log_1mq = torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
    lp_old = torch.stack([log_q, log_1mq], -1)
    lp_t = torch.tensor([math.log(p), math.log1p(-p)], dtype=torch.float64).expand_as(lp_old)
    lp_b = torch.tensor([math.log(b), math.log1p(-b)], dtype=torch.float64).expand_as(lp_old)
    adv, _ = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=float(lam), clip_strength=c,
                                    clip_mode=clip_mode)
    return (adv[..., 0] - adv[..., 1]).numpy()


def rest_points(lam: float, p: float, b: float, c: float, clip_mode: str, n_grid: int = 4001) -> dict:
    """{"stable": [q, ...], "unstable": [q, ...], "drift_low": ±1, "drift_high": ±1}: the rest points of the
    two-class dynamics (bisection-refined sign changes of g on a logit grid) and the sign of g at the grid's
    ends (+1 at the high end: q runs to 1 there; −1 at the low end: q runs to 0)."""
    z = np.linspace(-Z_RANGE, Z_RANGE, n_grid)
    g = advantage_gap(z, lam, p, b, c, clip_mode)
    out = {"stable": [], "unstable": [], "drift_low": int(np.sign(g[0])), "drift_high": int(np.sign(g[-1]))}
    for i in np.nonzero(np.sign(g[:-1]) != np.sign(g[1:]))[0]:
        lo, hi = z[i], z[i + 1]
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if np.sign(advantage_gap(np.array([mid]), lam, p, b, c, clip_mode)[0]) == np.sign(g[i]):
                lo = mid
            else:
                hi = mid
        q = float(1.0 / (1.0 + math.exp(-0.5 * (lo + hi))))
        out["stable" if g[i] > 0 else "unstable"].append(q)  # + to −: a push back from both sides
    return out


def describe(points: dict) -> str:
    """A short text of where the student rests or runs: 'tail 3.1e-03', 'q → 1', 'q → 0 (contract lost)'."""
    if points["stable"]:
        return ", ".join(f"tail {1 - q:.2g}" for q in points["stable"])
    if points["drift_high"] > 0:
        return "q → 1 (tail → 0)"
    if points["drift_low"] < 0:
        return "q → 0 (contract lost)"
    return "no rest point"


# ---------------------------------------------------------------------------------------------------------
# the full-vocabulary fixed point (issue 19): no lumping of the tail into one class

FULL_VOCAB_LAMBDAS = (0.0, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)


def full_vocab_keep(log_pt: np.ndarray, log_pb: np.ndarray, keep: np.ndarray,
                    lambdas=FULL_VOCAB_LAMBDAS, *, contract_aware: bool = False) -> np.ndarray:
    """[len(lambdas)] contract-keeping mass of q_λ(y) ∝ π_T(y)^λ · π_B(y)^(1−λ) over the whole vocabulary at one
    position (log_pt, log_pb: [V] log-probabilities; keep: bool [V]). λ = 1 gives the teacher's keeping mass,
    λ = 0 the base's. Computed in log space (logaddexp), so tokens with log-probability −700 are exact.
    contract_aware: the fixed point of contract-aware extrapolation (core/loss.py), q(y) ∝ π_T(y) on the
    tokens that break the contract."""
    lam = np.asarray(lambdas, dtype=np.float64)[:, None]
    logits = lam * log_pt[None, :] + (1.0 - lam) * log_pb[None, :]
    if contract_aware:
        logits = np.where(keep[None, :], logits, log_pt[None, :])
    total = _logsumexp(logits, axis=1)
    kept = _logsumexp(np.where(keep[None, :], logits, -np.inf), axis=1)
    return np.exp(kept - total)


def capped_full_vocab_keep(log_pt: np.ndarray, log_pb: np.ndarray, keep: np.ndarray, c: float,
                           lambdas=FULL_VOCAB_LAMBDAS) -> np.ndarray:
    """[len(lambdas)] contract-keeping mass of the rest point of the expected update under the teacher_ratio
    cap (the teacher log-ratio capped above at log c), over the whole vocabulary at one position.

    How it is computed (docs/method.md#the-fixed-point-each-mode-implies). With one step per rollout the
    expected gradient on token y's logit is q(y)·(A(y) − Ā), so at rest every token alive shares one advantage
    κ, and a token's mass is stable where its A falls as its own log-mass ℓ grows. Per token, with t, b its
    teacher and base log-probs and L = log c: A(ℓ) = λ·min(t − ℓ, L) + (1 − λ)·(b − ℓ). Uncapped (ℓ ≥ t − L) A falls
    with slope −1 and A = κ gives q_λ's ℓ = λt + (1−λ)b − κ. Capped (ℓ < t − L: the student below 1/c of the
    teacher) A = λL + (λ−1)(ℓ − b): for λ > 1 it *rises* with ℓ, so a token that comes to rest there is pushed
    to 0. Hence for λ > 1 the rest point is q_λ restricted to the tokens that stay uncapped, q(y) ≥ π_T(y)/c,
    renormalised; a token stays iff (λ−1)(t − b) ≥ κ − L, and with the tokens sorted by t − b (descending) the
    survivors are the longest prefix where that holds for κ = logsumexp of λt + (1−λ)b over the prefix
    (the left side falls and κ grows along the order, so the prefix is found in one pass). This is the stable
    rest point with the most survivors: an upper bound on the tail a converged run keeps under this cap. The
    logit-space flow from the warm start (q = π_B) can end at one with fewer — on a 12-token example at λ = 2
    the modal tokens' growth pushed every tail token under the cap in transit, where it died (keeping mass 1.0
    against this bound's 0.996; tests/test_fixed_points.py) — so read it as "how much tail the cap lets live".
    λ = 1 gives the teacher; for λ < 1 the capped branch falls too (slope −(1−λ)), so the rest point is unique:
    every token lives, at ℓ = b − (κ − λL)/(1−λ) where capped, κ by bisection."""
    return np.array([_kept_mass(capped_rest_point(log_pt, log_pb, c, float(lam)), keep) for lam in lambdas])


def _kept_mass(ell: np.ndarray, keep: np.ndarray) -> float:
    """The contract-keeping mass of a position's log-masses `ell` (−inf: a dead token)."""
    return float(np.exp(_logsumexp(np.where(keep, ell, -np.inf))))


def capped_rest_point(log_pt: np.ndarray, log_pb: np.ndarray, c: float, lam: float) -> np.ndarray:
    """[V] log q of the teacher_ratio rest point of capped_full_vocab_keep (−inf: a token that died)."""
    log_c = math.log(c)
    w = lam * log_pt + (1.0 - lam) * log_pb  # log q_λ up to its normaliser
    if lam > 1.0:
        order = np.argsort(-(log_pt - log_pb), kind="stable")
        kappa = np.logaddexp.accumulate(w[order])
        alive = (lam - 1.0) * (log_pt - log_pb)[order] - kappa + log_c >= 0  # a prefix (its first entry always)
        n = int(np.count_nonzero(alive))
        ell = np.full_like(w, -np.inf)
        ell[order[:n]] = w[order[:n]] - kappa[n - 1]
        return ell
    if lam == 1.0:
        return log_pt - _logsumexp(log_pt)

    def log_mass(kappa: float) -> np.ndarray:
        uncapped = w - kappa
        return np.where(uncapped >= log_pt - log_c, uncapped, log_pb - (kappa - lam * log_c) / (1.0 - lam))

    lo, hi = -100.0, 100.0  # Σ exp(log_mass) falls as κ grows: bisect for Σ = 1
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:  # the bracket is two adjacent floats (after ~50 halvings): nothing left to halve
            break
        if _logsumexp(log_mass(mid)) > 0:
            lo = mid
        else:
            hi = mid
    ell = log_mass(0.5 * (lo + hi))
    return ell - _logsumexp(ell)


# ---------------------------------------------------------------------------------------------------------
# the other two caps over the whole vocabulary (docs/method.md#the-fixed-point-each-mode-implies)

CAPPED_LAMBDAS = tuple(lam for lam in FULL_VOCAB_LAMBDAS if lam >= 1.0)  # the caps matter for extrapolation


def base_ratio_rest_point(log_pt: np.ndarray, log_pb: np.ndarray, c: float, lam: float) -> np.ndarray:
    """[V] log q of the rest point of the expected update under `base_ratio` (λ ≥ 1), −inf for a dead token.

    Per token, with t, b its teacher and base log-probs, ℓ its log-mass and L = log c, the loss's advantage is
    A(ℓ) = λ·min(t − ℓ, L) + (λ−1)·clamp(ℓ − b, −L, L). Below the teacher's cap (ℓ < t − L) A rises with ℓ (slope
    λ−1 or 0) from A(−∞) = L to its peak P = L + (λ−1)·clamp(t − b, 0, 2L) at ℓ = t − L; above it A falls (slope
    −λ or −1), so a token rests at the one ℓ ≥ t − L where A = κ, the advantage all live tokens share:
        ℓ = t − (κ + (λ−1)L)/λ   where ℓ ≤ b − L (the base term capped below),
        ℓ = λt + (1−λ)b − κ      between (q_λ's own place),
        ℓ = t − (κ − (λ−1)L)/λ   where ℓ ≥ b + L (capped above).
    Every live token therefore sits between π_T/c and π_T·c^{(λ−1)/λ}·e^{−κ/λ} (below π_T/c only on the flat
    at κ = L, below): a band around the teacher's mass, whatever λ. A token with P < κ has no place and dies; a
    dead token's advantage is L, so for κ < L no token can die (it would grow back) and the rest point is
    unique — the case the flows of tests/test_fixed_points.py reach from the warm start. For κ ≥ L every token
    that can live lives (the rest point with the most survivors, as for teacher_ratio). κ solves Σ exp(ℓ) = 1
    (Newton on log Σ, kept inside a bisection bracket). Where no κ solves it exactly, Σ jumps as tokens die: a
    token dying at a strict peak cannot hold part of its mass, so it dies and κ is solved without it; at κ = L
    the tokens with t ≤ b sit on the flat A = L (any mass below π_T/c is a rest), and they share the missing
    mass in proportion to their mass just before the jump."""
    t, b = np.asarray(log_pt, np.float64), np.asarray(log_pb, np.float64)
    if lam < 1.0:
        raise ValueError("base_ratio_rest_point is for λ ≥ 1 (the caps matter for extrapolation)")
    if lam == 1.0:  # plain OPD: the base cancels, the student rests at the teacher
        return t - _logsumexp(t)
    log_c = math.log(c)
    peak = log_c + (lam - 1.0) * np.clip(t - b, 0.0, 2.0 * log_c)

    def place(kappa: float) -> tuple[np.ndarray, np.ndarray]:
        """(ℓ, dℓ/dκ) per token at common advantage κ; ℓ = −inf for a token with no place."""
        middle = lam * t + (1.0 - lam) * b - kappa
        low, high = middle < b - log_c, middle > b + log_c
        ell = np.where(low, t - (kappa + (lam - 1.0) * log_c) / lam,
                       np.where(high, t - (kappa - (lam - 1.0) * log_c) / lam, middle))
        slope = np.where(low | high, -1.0 / lam, -1.0)
        ell, slope = np.minimum(ell, 0.0), np.where(ell > 0.0, 0.0, slope)  # a token cannot hold more than all
        dead = peak < kappa
        return np.where(dead, -np.inf, ell), np.where(dead, 0.0, slope)

    def solve(excluded: np.ndarray) -> tuple[float, float]:
        """A bracket [lo, hi] of κ with Σ exp(ℓ) ≥ 1 at lo and < 1 at hi, as narrow as the jumps allow."""
        def log_total(kappa: float) -> tuple[float, np.ndarray, np.ndarray]:
            ell, slope = place(kappa)
            ell = np.where(excluded, -np.inf, ell)
            return float(_logsumexp(ell)), ell, slope

        lo, hi = -1.0, 1.0
        while log_total(lo)[0] < 0.0:
            lo *= 2.0
        while log_total(hi)[0] >= 0.0:
            hi *= 2.0
        kappa = lo
        for _ in range(200):
            total, ell, slope = log_total(kappa)
            lo, hi = (kappa, hi) if total >= 0 else (lo, kappa)
            if abs(total) < 1e-13:
                return kappa, kappa
            if hi - lo < 1e-13:
                break
            dtotal = float(np.sum(np.exp(ell - total) * slope)) if np.isfinite(total) else 0.0  # d log Σ/dκ
            step = kappa - total / dtotal if dtotal < 0 else None
            kappa = step if step is not None and lo < step < hi else 0.5 * (lo + hi)
        return lo, hi

    excluded = np.zeros(t.shape, bool)
    while True:
        lo, hi = solve(excluded)
        below, above = (np.where(excluded, -np.inf, place(k)[0]) for k in (lo, hi))
        m_below, m_above = np.exp(_logsumexp(below)), np.exp(_logsumexp(above))
        if m_below - m_above < 1e-12:  # continuous there: κ found
            return above - _logsumexp(above)
        jumping = np.isfinite(below) & ~np.isfinite(above)
        at_peak = jumping & (peak > log_c + 1e-12)
        if not at_peak.any():  # κ = L: the jumping tokens are on the flat A = L and share the missing mass
            theta = (1.0 - m_above) / (m_below - m_above)
            q = np.exp(above) + theta * (np.exp(below) - np.exp(above))
            with np.errstate(divide="ignore"):
                return np.log(q / q.sum())
        excluded |= at_peak  # a token at a strict peak cannot hold part of its mass: it dies, κ is solved again


def two_sided_departs(log_pt: np.ndarray, log_pb: np.ndarray, c: float, lam: float) -> bool:
    """Whether the two_sided rest point can differ from teacher_ratio's at this position (λ > 1).

    two_sided adds one cap to teacher_ratio's: the teacher log-ratio capped below at −log c, which binds only
    where the student holds a token above c·π_T. There the advantage, −λL + (λ−1)(ℓ − b), *rises* with the
    token's own mass: no token can rest above c·π_T. So where teacher_ratio's rest point (capped_rest_point)
    holds every token at or below c·π_T it is two_sided's too; where it holds one above, two_sided has no rest
    point with that token where teacher_ratio puts it — the token is pushed up (it may take the position) or,
    starting small, dies on the way (which the flows of tests/test_fixed_points.py both show). The outcome then
    depends on the dynamics, not on the rest point, and calibrate reports how often that happens."""
    return _above_c_teacher(capped_rest_point(log_pt, log_pb, c, lam), log_pt, c)


def _above_c_teacher(ell: np.ndarray, log_pt: np.ndarray, c: float) -> bool:
    return bool(np.any(ell > np.asarray(log_pt) + math.log(c) + 1e-12))


def capped_full_vocab_table(log_pt: np.ndarray, log_pb: np.ndarray, keep: np.ndarray, c: float) -> dict:
    """The three caps' rest points at one position, as `calibrate` reports them: the keeping mass under
    teacher_ratio over FULL_VOCAB_LAMBDAS (capped_rest_point), under base_ratio over CAPPED_LAMBDAS
    (base_ratio_rest_point), and whether two_sided departs from teacher_ratio there (two_sided_departs)."""
    teacher_ratio, departs = [], []
    for lam in FULL_VOCAB_LAMBDAS:  # one teacher_ratio rest point per λ serves both (two_sided_departs's test)
        ell = capped_rest_point(log_pt, log_pb, c, float(lam))
        teacher_ratio.append(_kept_mass(ell, keep))
        if lam >= 1.0:
            departs.append(lam > 1.0 and _above_c_teacher(ell, log_pt, c))
    base = [_kept_mass(base_ratio_rest_point(log_pt, log_pb, c, float(lam)), keep) for lam in CAPPED_LAMBDAS]
    return {"teacher_ratio": np.array(teacher_ratio), "base_ratio": np.array(base),
            "two_sided_departs": np.array(departs)}
