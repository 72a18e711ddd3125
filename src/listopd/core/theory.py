"""Closed-form extrapolation cliff of the single-position Bernoulli reduction
(docs/method.md#the-fixed-point-and-the-clip-safe-region). numpy only.

At one structural position of the output, split the vocabulary into the contract-keeping "modal" class and
its tail. p = teacher mass on the modal class, b = base (warm-start) mass on it, q = student mass on it,
λ = reward-extrapolation coefficient, c > 1 = cap on the teacher-to-student likelihood ratio of the tail.

Fixed point of the extrapolated objective π* ∝ π_T^λ π_B^(1−λ), restricted to the two classes:

    logit(q_λ) = λ·logit(p) + (1−λ)·logit(b) = logit(p) + (λ−1)·D,     D = logit(p) − logit(b)

λ = 1 gives q = p (plain OPD). With b < p (D > 0), λ > 1 pushes q_λ above p and shrinks the tail 1 − q_λ.

Clip-safe region: the tail ratio stays within the cap,

    (1−p)/(1−q) ≤ c   ⇔   q ≤ (c−1+p)/c   ⇔   1−q ≥ (1−p)/c.

Threshold. Put q = q_λ in the tail ratio. From 1−q = 1/(1 + e^logit(q)) and e^logit(q_λ) = p/(1−p)·e^((λ−1)D):

    (1−p)/(1−q_λ) = (1−p) + p·e^((λ−1)D) = 1 + p·expm1((λ−1)·D)

which is increasing in λ when D > 0 and equals 1 at λ = 1. Setting it equal to c (the fixed point sits on
the clip-safe boundary) and solving for λ:

    λ*(p, b, c) = 1 + log1p((c−1)/p) / (logit(p) − logit(b))
                = [log((1−p)/(c−1+p)) − log((1−b)/b)] / [log((1−p)/p) − log((1−b)/b)]

(docs/method.md#the-threshold-λ; the two lines are the same number: subtract 1 from the second and simplify).
We evaluate the first line: it gives λ* − 1 directly, so λ* keeps full relative precision as p → 1 where
λ* → 1. Consequences, all visible in the first line (c > 1, b < p): λ* > 1; λ* grows with c; λ* grows as
b → p (D → 0, λ* → ∞); λ* falls toward 1 as p → 1 (numerator falls, D grows); for b = 1/2,
λ* ≈ 1 + log c / log(1/(1−p)), and since log1p((c−1)/p) = log c + O(1−p) and logit(p) = log(1/(1−p)) + O(1−p),
the relative error of this asymptote on λ* − 1 is below 2(1−p) (not merely O(1/log(1/(1−p)))).

Base-neutral form (b = 1/2, logit(b) = 0): λ*(p, c) = 1 + log1p((c−1)/p) / logit(p).

b > p (D < 0): for λ ≥ 1 the fixed point moves *away* from the modal class, its tail only grows, and it
never leaves the clip-safe region, so λ*(p, b, c) = +inf. (The raw two-log formula then returns a number
below 1: the threshold on the λ < 1 side, which is not the extrapolation cliff.) p == b: D = 0, extrapolation
does nothing (q_λ = p for every λ), the fixed point stays at the teacher, which is clip-safe, so λ* = +inf too —
the limit of λ* from either side (b → p⁻: D → 0⁺ and λ* → ∞; b > p: +inf). One answer everywhere: +inf.

Inverse for planning: the clip strength at which a given λ > 1 is exactly the threshold is the tail ratio
at λ, c(λ; p, b) = (1−p)/(1−q_λ) = 1 + p·expm1((λ−1)·D).

Near p → 1 only the tail 1 − p carries information; everything here is computed from logits, log1p, expm1
and logaddexp (never log(1 − p) of a rounded 1 − p), and is accurate for p as close to 1 as 1 − 1e-12.

All functions broadcast their arguments; they return a Python float (bool for is_clip_safe) when every
argument is a scalar and an ndarray otherwise. Arguments outside the domain raise listopd.util.errors.DomainError.
`lambda_star_or_none` is the one scalar wrapper for callers that want a value (or None) instead of the error.
"""

from __future__ import annotations

import math

import numpy as np

from listopd.util.errors import DomainError


# ---------------------------------------------------------------------------------------------------------
# argument checks

def _fail(name: str, why: str, x: np.ndarray, bad: np.ndarray) -> None:
    """Raise DomainError naming the argument; for arrays also say how many entries are bad and where."""
    if bad.ndim == 0:
        raise DomainError(f"{name} {why}; got {x.item()!r}")
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    where = str(idx[0]) if len(idx) == 1 else str(idx)
    raise DomainError(f"{name} {why}; {int(bad.sum())} of {bad.size} entries, first at index {where}: "
                      f"{x[idx].item()!r}")


def _arr(name: str, x) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be a number or an array of numbers; got {x!r}") from None
    nan = np.isnan(a)
    if nan.any():
        _fail(name, "must not be NaN", a, nan)
    return a


def _prob(name: str, x) -> np.ndarray:
    a = _arr(name, x)
    bad = ~((a > 0) & (a < 1))
    if bad.any():
        _fail(name, "must be in the open interval (0, 1)", a, bad)
    return a


def _clip(name: str, x) -> np.ndarray:
    a = _arr(name, x)
    bad = ~((a > 1) & np.isfinite(a))
    if bad.any():
        _fail(name, "must be a finite number > 1 (the clip caps a ratio at c)", a, bad)
    return a


def _finite(name: str, x) -> np.ndarray:
    a = _arr(name, x)
    bad = ~np.isfinite(a)
    if bad.any():
        _fail(name, "must be finite", a, bad)
    return a


def _broadcast(**arrays: np.ndarray) -> list[np.ndarray]:
    try:
        return list(np.broadcast_arrays(*arrays.values()))
    except ValueError:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
        raise DomainError(f"arguments cannot be broadcast together: {shapes}") from None


def _out(x: np.ndarray, *inputs):
    """Python scalar when every input was a scalar, else the ndarray."""
    if all(np.ndim(i) == 0 for i in inputs):
        return x.item()
    return x


# ---------------------------------------------------------------------------------------------------------
# the reduction

def _logit(x: np.ndarray) -> np.ndarray:
    return np.log(x) - np.log1p(-x)


def logit(x):
    """logit(x) = log(x) − log1p(−x), for x in (0, 1)."""
    x_ = _prob("x", x)
    return _out(_logit(x_), x)


def _fixed_point_logit(lam, p, b):
    lam_, p_, b_ = _finite("lam", lam), _prob("p", p), _prob("b", b)
    lam_, p_, b_ = _broadcast(lam=lam_, p=p_, b=b_)
    lp = _logit(p_)
    return lp + (lam_ - 1.0) * (lp - _logit(b_))  # exactly logit(p) at λ = 1


def fixed_point(lam, p, b):
    """q_λ with logit(q_λ) = λ·logit(p) + (1−λ)·logit(b). Any finite λ; p == b is allowed (then q_λ = p)."""
    z = _fixed_point_logit(lam, p, b)
    return _out(np.exp(-np.logaddexp(0.0, -z)), lam, p, b)


def fixed_point_tail(lam, p, b):
    """1 − q_λ = expit(−logit(q_λ)), computed from the logit (not as 1 − q_λ): exact where q_λ rounds to 1."""
    z = _fixed_point_logit(lam, p, b)
    return _out(np.exp(-np.logaddexp(0.0, z)), lam, p, b)


def clip_safe_boundary(p, c):
    """(c − 1 + p)/c: the largest clip-safe modal mass q. Its tail is (1 − p)/c."""
    p_, c_ = _broadcast(p=_prob("p", p), c=_clip("c", c))
    return _out((c_ - 1.0 + p_) / c_, p, c)


def is_clip_safe(q, p, c, *, q_tail=None):
    """(1 − p)/(1 − q) ≤ c, tested as (1 − p) ≤ c·(1 − q) on tails (the boundary counts as safe).

    Pass the student's modal mass q in [0, 1], or q=None and its tail q_tail = 1 − q in [0, 1] directly
    (use the tail when q is within ~1e-16 of 1, e.g. from fixed_point_tail). q = 1 (zero tail) is not safe.
    Exactly at the boundary only the tail form is exact: q = clip_safe_boundary(p, c) is rounded, so
    is_clip_safe(that q, p, c) can go either way, while q_tail=(1 − p)/c is safe.
    """
    if (q is None) == (q_tail is None):
        raise DomainError("is_clip_safe needs exactly one of q and q_tail (the other must be None)")
    name, x = ("q", q) if q_tail is None else ("q_tail", q_tail)
    t = _arr(name, x)
    bad = ~((t >= 0) & (t <= 1))
    if bad.any():
        _fail(name, "must be in the closed interval [0, 1]", t, bad)
    if q_tail is None:
        t = 1.0 - t
    p_, c_ = _prob("p", p), _clip("c", c)
    t, p_, c_ = _broadcast(**{name: t, "p": p_, "c": c_})
    # 1 - p is exact for p >= 1/2 (Sterbenz) and has relative error ~1e-16 below.
    return _out((1.0 - p_) <= c_ * t, x, p, c)


def _lambda_star(p_, b_, c_):
    d = _logit(p_) - _logit(b_)
    with np.errstate(divide="ignore"):
        lam = 1.0 + np.log1p((c_ - 1.0) / p_) / d
    return np.where(d > 0, lam, np.inf)


def lambda_star(p, b, c):
    """λ*(p, b, c) = 1 + log1p((c−1)/p) / (logit(p) − logit(b)); +inf when b ≥ p (no cliff).

    Equal to [log((1−p)/(c−1+p)) − log((1−b)/b)] / [log((1−p)/p) − log((1−b)/b)] for b < p
    (docs/method.md#the-threshold-λ).
    At λ = λ* the fixed point sits on the clip-safe boundary: (1−p)/(1−q_λ*) = c.
    """
    p_, b_, c_ = _broadcast(p=_prob("p", p), b=_prob("b", b), c=_clip("c", c))
    return _out(_lambda_star(p_, b_, c_), p, b, c)


def lambda_star_base_neutral(p, c):
    """λ*(p, c) = λ*(p, 1/2, c) = 1 + log1p((c−1)/p) / logit(p); +inf for p ≤ 1/2 (no cliff)."""
    p_, c_ = _broadcast(p=_prob("p", p), c=_clip("c", c))
    return _out(_lambda_star(p_, np.full_like(p_, 0.5), c_), p, c)


LAMBDA_STAR_FORMS = ("pb", "base_neutral")


def lambda_star_or_none(p, b, c, *, form: str = "pb", no_cliff=math.inf, strict: bool = False):
    """λ* of one scalar (p, b, c) as a Python float, for callers that report it rather than compute with it.

    form "pb": λ*(p, b, c) (`lambda_star`); form "base_neutral": λ*(p, c) = λ*(p, 1/2, c)
    (`lambda_star_base_neutral`; b is ignored and may be None).
    Returns λ* (finite, > 1) when b < p (p > 1/2 base-neutral); `no_cliff` when b ≥ p (p ≤ 1/2), where λ* = +∞:
    the fixed point never leaves the clip-safe region (default math.inf; None for JSON, which has no ∞).
    Returns None where λ* is undefined: an argument outside the domain (not a number, NaN, p or b outside
    (0, 1), c not a finite number > 1); with strict=True the DomainError that `lambda_star` raises there is
    raised instead.
    """
    if form not in LAMBDA_STAR_FORMS:
        raise ValueError(f"form must be one of {', '.join(LAMBDA_STAR_FORMS)}; got {form!r}")
    try:
        lam = float(lambda_star(p, b, c) if form == "pb" else lambda_star_base_neutral(p, c))
    except (ValueError, TypeError):  # DomainError is a ValueError
        if strict:
            raise
        return None
    return no_cliff if math.isinf(lam) else lam


# ---------------------------------------------------------------------------------------------------------
# inverses for planning

def c_for_lambda(lam, p, b):
    """Clip strength at which λ is exactly the threshold: c = (1−p)/(1−q_λ) = 1 + p·expm1((λ−1)·D).

    D = logit(p) − logit(b). Proof: 1 − q_λ = 1/(1 + p/(1−p)·e^((λ−1)D)), so (1−p)/(1−q_λ) = (1−p) + p·e^((λ−1)D);
    and λ*(p, b, c) = λ ⇔ log1p((c−1)/p) = (λ−1)·D ⇔ the same c. Requires λ > 1 and b < p (then c > 1).
    May overflow to inf for large (λ−1)·D.
    """
    lam_, p_, b_ = _finite("lam", lam), _prob("p", p), _prob("b", b)
    if (bad := lam_ <= 1).any():
        _fail("lam", "must be > 1 (at λ ≤ 1 no clip c > 1 binds)", lam_, bad)
    lam_, p_, b_ = _broadcast(lam=lam_, p=p_, b=b_)
    if (bad := p_ <= b_).any():
        _fail("p", "must be > b (for b ≥ p the fixed point never leaves the clip-safe region)", p_, bad)
    d = _logit(p_) - _logit(b_)
    with np.errstate(over="ignore"):
        c = 1.0 + p_ * np.expm1((lam_ - 1.0) * d)
    return _out(c, lam, p, b)


def p_for_lambda_star(target, c, b=0.5, *, tail: bool = False):
    """The teacher mass p in (b, 1) with λ*(p, b, c) = target (target > 1); with tail=True, 1 − p instead.

    λ*(p, b, c) − 1 = log1p((c−1)/p) / (logit(p) − logit(b)) is strictly decreasing in p on (b, 1), from +inf
    at p → b to 1 at p → 1 (numerator decreasing, positive; denominator increasing, positive), so each target
    > 1 has exactly one p. Solved by vectorised bisection on z = logit(p) (≈ −log(1 − p) near 1, and precise
    for small p too), 200 halvings: converged to float precision. Raises DomainError when the answer is not a
    float64 in (b, 1): p would round to 1 (target too close to 1; tail=True allows tails down to ~1e-308) or
    to b (target too large).
    """
    t_, c_, b_ = _finite("target", target), _clip("c", c), _prob("b", b)
    if (bad := t_ <= 1).any():
        _fail("target", "must be > 1 (λ* > 1 whenever c > 1 and b < p)", t_, bad)
    t_, c_, b_ = _broadcast(target=t_, c=c_, b=b_)

    lb = _logit(b_)

    def lam_of(z):  # λ* as a function of z = logit(p) > logit(b)
        p = np.exp(-np.logaddexp(0.0, -z))
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = 1.0 + np.log1p((c_ - 1.0) / p) / (z - lb)
        return np.where(z > lb, lam, np.inf)

    lo = lb.copy()  # p = b: λ* = inf
    hi = np.full(t_.shape, -np.log(np.finfo(float).tiny))  # 1 - p ~ 2e-308: λ* smallest
    if (bad := lam_of(hi) > t_).any():
        _fail("target", "is too close to 1 for this c and b (needs 1 − p below 2.2e-308)", t_, bad)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = lam_of(mid) > t_  # λ* too large: p still too small
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    z = 0.5 * (lo + hi)
    tl = np.exp(-np.logaddexp(0.0, z))
    if tail:
        return _out(tl, target, c, b)
    p = np.exp(-np.logaddexp(0.0, -z))
    if (bad := p >= 1).any():
        _fail("target", "is too close to 1 for this c and b: p rounds to 1.0 in float64 "
              "(use tail=True to get 1 − p)", t_, bad)
    if (bad := p <= b_).any():
        _fail("target", "is too large for this c and b: p rounds to b in float64", t_, bad)
    return _out(p, target, c, b)
