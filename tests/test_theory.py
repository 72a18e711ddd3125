"""The closed-form extrapolation cliff (BRIEF §3): fixed point, clip-safe region, λ*, its inverses, domain."""

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listopd.core import theory as th
from listopd.util.errors import DomainError

P_NEAR_1 = 1 - 1e-12
FAST = settings(max_examples=60, deadline=None)


def expit(z):
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=float)))


def raw_lambda_star(p, b, c):
    """BRIEF §3.3 as written (fine away from p -> 1)."""
    return (np.log((1 - p) / (c - 1 + p)) - np.log((1 - b) / b)) / (np.log((1 - p) / p) - np.log((1 - b) / b))


# p in (0, 1) up to 1 - 1e-12 drawn through its logit; b < p by a logit gap D; c > 1
logit_p = st.floats(-5.0, np.log(1e12))
gap = st.floats(1e-3, 20.0)
clip = st.floats(1.0001, 1000.0)


@st.composite
def pbc(draw):
    zp = draw(logit_p)
    p = float(expit(zp))
    b = float(expit(zp - draw(gap)))
    if not (0 < b < p < 1):  # rounding at the extremes
        b = p / 2
    return p, b, draw(clip)


# ---------------------------------------------------------------------------------------------------------
# fixed point and clip-safe region

def test_logit_stable_near_one():
    p = P_NEAR_1
    assert th.logit(p) == pytest.approx(np.log(p) - np.log(1 - p), rel=1e-13)
    assert th.logit(0.5) == 0.0
    assert th.logit(1e-300) == pytest.approx(np.log(1e-300), rel=1e-15)


@pytest.mark.parametrize("p,b", [(0.9, 0.5), (0.999, 0.9), (0.3, 0.7), (P_NEAR_1, 0.5), (1e-9, 0.2)])
def test_lambda_one_gives_teacher(p, b):
    assert th.fixed_point(1.0, p, b) == pytest.approx(p, rel=1e-15)
    assert th.fixed_point_tail(1.0, p, b) == pytest.approx(1 - p, rel=1e-12)
    assert th.fixed_point(0.0, p, b) == pytest.approx(b, rel=1e-12)


def test_fixed_point_tail_is_exact_where_q_rounds_to_one():
    # logit(q) = 2*logit(p) at b = 1/2, λ = 2, so the tail is ~ (1-p)^2 / p^2 ~ 1e-24, while q == 1.0
    tail = th.fixed_point_tail(2.0, P_NEAR_1, 0.5)
    assert th.fixed_point(2.0, P_NEAR_1, 0.5) == 1.0
    assert tail == pytest.approx((1 - P_NEAR_1) ** 2 / P_NEAR_1 ** 2, rel=1e-9)


def test_extrapolation_sharpens_when_base_below_teacher():
    lams = np.linspace(1.0, 3.0, 9)
    tails = th.fixed_point_tail(lams, 0.99, 0.6)
    assert np.all(np.diff(tails) < 0)
    assert np.all(np.diff(th.fixed_point_tail(lams, 0.6, 0.99)) > 0)  # b > p: tail grows


def test_clip_safe_boundary_and_predicate():
    p, c = 0.99, 4.0
    q = th.clip_safe_boundary(p, c)
    assert q == pytest.approx((c - 1 + p) / c)
    assert th.is_clip_safe(None, p, c, q_tail=(1 - p) / c)  # the boundary itself counts as safe
    assert th.is_clip_safe(q - 1e-9, p, c) and not th.is_clip_safe(q + 1e-9, p, c)
    assert not th.is_clip_safe(1.0, p, c) and th.is_clip_safe(0.0, p, c)
    # the tail form works where q itself would round to 1
    t = (1 - P_NEAR_1) / 5
    assert th.is_clip_safe(None, P_NEAR_1, 5, q_tail=t * (1 + 1e-9))
    assert not th.is_clip_safe(None, P_NEAR_1, 5, q_tail=t * (1 - 1e-9))
    assert isinstance(th.is_clip_safe(0.5, p, c), bool)
    assert th.is_clip_safe([0.5, 0.9999], p, c).tolist() == [True, False]


# ---------------------------------------------------------------------------------------------------------
# λ*

def test_brief_worked_number():
    assert th.lambda_star_base_neutral(0.99934, 5) == pytest.approx(1.220, abs=0.002)
    assert th.lambda_star(0.99934, 0.5, 5) == th.lambda_star_base_neutral(0.99934, 5)


@pytest.mark.parametrize("c,expected", [(2, 1.095), (3, 1.150), (4, 1.189), (5, 1.220), (8, 1.284), (10, 1.315)])
def test_brief_c_table(c, expected):
    assert th.lambda_star_base_neutral(0.99934, c) == pytest.approx(expected, abs=0.002)


def test_brief_section2_example():
    # p = 0.999, b = 0.9, c = 3 -> λ* = 1.233 (BRIEF §2, the teacher-ratio cap lead)
    assert th.lambda_star(0.999, 0.9, 3) == pytest.approx(1.233, abs=5e-4)


def test_tail_ratio_is_c_at_lambda_star_on_a_grid():
    ps = np.array([0.05, 0.3, 0.6, 0.9, 0.99, 0.99934, 1 - 1e-6, 1 - 1e-9, P_NEAR_1])
    cs = np.array([1.001, 1.5, 2, 5, 10, 100, 1e4])
    p, c, frac = np.meshgrid(ps, cs, [1e-6, 0.1, 0.5, 0.9, 0.999], indexing="ij")
    b = p * frac  # b < p
    lam = th.lambda_star(p, b, c)
    assert np.all(np.isfinite(lam)) and np.all(lam > 1)
    ratio = (1 - p) / th.fixed_point_tail(lam, p, b)
    np.testing.assert_allclose(ratio, c, rtol=1e-9)


@FAST
@given(pbc())
def test_tail_ratio_is_c_at_lambda_star(x):
    p, b, c = x
    lam = th.lambda_star(p, b, c)
    assert lam > 1
    assert (1 - p) / th.fixed_point_tail(lam, p, b) == pytest.approx(c, rel=1e-9)
    # and the fixed point is clip-safe just below λ*, not just above
    step = 1e-6 * (lam - 1)
    assert th.is_clip_safe(None, p, c, q_tail=th.fixed_point_tail(lam - step, p, b))
    assert not th.is_clip_safe(None, p, c, q_tail=th.fixed_point_tail(lam + step, p, b))


@FAST
@given(st.floats(0.01, 0.999), st.floats(0.01, 0.99), clip)
def test_matches_the_brief_formula(p, frac, c):
    b = p * frac
    assert th.lambda_star(p, b, c) == pytest.approx(raw_lambda_star(p, b, c), rel=1e-9)


def test_base_above_teacher_is_never_cliffed():
    assert th.lambda_star(0.9, 0.95, 5) == np.inf
    assert th.lambda_star_base_neutral(0.3, 5) == np.inf
    lam = th.lambda_star([0.9, 0.9], [0.5, 0.95], 5)
    assert np.isfinite(lam[0]) and lam[1] == np.inf
    # the tail never falls below the boundary for any λ >= 1
    tails = th.fixed_point_tail(np.linspace(1, 50, 50), 0.9, 0.95)
    assert np.all(th.is_clip_safe(None, 0.9, 5, q_tail=tails))


@FAST
@given(pbc(), clip)
def test_increasing_in_c(x, c2):
    p, b, c1 = x
    lo, hi = sorted([c1, c2])
    assert th.lambda_star(p, b, lo) <= th.lambda_star(p, b, hi)
    if hi > lo * (1 + 1e-6):
        assert th.lambda_star(p, b, lo) < th.lambda_star(p, b, hi)


@FAST
@given(pbc(), st.floats(0.0, 1.0))
def test_increasing_in_b_below_p(x, frac):
    p, b1, c = x
    b2 = float(expit(th.logit(b1) + frac * (th.logit(p) - th.logit(b1))))  # between b1 and p in logit
    if b1 < b2 < p:
        assert th.lambda_star(p, b1, c) <= th.lambda_star(p, b2, c)


@FAST
@given(pbc(), st.floats(0.0, 1.0))
def test_decreasing_in_p_toward_one(x, frac):
    p1, b, c = x
    p2 = float(expit(th.logit(p1) + frac * 10.0))  # p1 <= p2 < 1
    if p1 < p2 < 1:
        assert th.lambda_star(p1, b, c) >= th.lambda_star(p2, b, c)


def test_limits_in_p():
    c = 5.0
    # λ* -> inf as p -> b+, -> 1 as p -> 1
    assert th.lambda_star(0.5 + 1e-12, 0.5, c) > 1e10
    assert 1 < th.lambda_star(P_NEAR_1, 0.5, c) < 1.06


@FAST
@given(st.floats(3.0, np.log(1e12)), clip)
def test_asymptote_base_neutral(minus_log_tail, c):
    p = 1 - np.exp(-minus_log_tail)
    tail = 1 - p  # the float's exact tail
    approx = 1 + np.log(c) / np.log(1 / tail)
    exact = th.lambda_star_base_neutral(p, c)
    # λ* - 1 = log1p((c-1)/p) / logit(p): relative error of the asymptote on λ* - 1 is below 2(1 - p)
    assert (exact - 1) == pytest.approx(approx - 1, rel=3 * tail + 1e-12)


# ---------------------------------------------------------------------------------------------------------
# inverses

@FAST
@given(pbc())
def test_p_for_lambda_star_round_trip(x):
    p, b, c = x
    lam = th.lambda_star(p, b, c)
    p2 = th.p_for_lambda_star(lam, c, b)
    # the residual is at float precision; p itself is as well determined as λ*'s slope in p allows
    # (e.g. c -> 1 with a large logit gap makes λ* nearly flat in p: |dλ*/dp| ~ 1e-4)
    assert th.lambda_star(p2, b, c) == pytest.approx(lam, rel=1e-11)
    assert p2 == pytest.approx(p, rel=1e-9)
    assert th.p_for_lambda_star(lam, c, b, tail=True) == pytest.approx(1 - p, rel=1e-6)


@FAST
@given(pbc())
def test_c_for_lambda_round_trip(x):
    p, b, c = x
    lam = th.lambda_star(p, b, c)
    assert th.c_for_lambda(lam, p, b) == pytest.approx(c, rel=1e-9)


def test_inverses_brief_numbers():
    assert th.p_for_lambda_star(1.22, 5) == pytest.approx(0.99934, abs=5e-6)  # 0.999337
    assert th.c_for_lambda(1.22, 0.99934, 0.5) == pytest.approx(5, abs=0.02)
    # closed form c = (1-p)/(1-q_λ)
    lam, p, b = 1.3, 0.995, 0.7
    assert th.c_for_lambda(lam, p, b) == pytest.approx((1 - p) / th.fixed_point_tail(lam, p, b), rel=1e-12)


def test_p_for_lambda_star_extremes():
    # a target very close to 1 needs a tail far below float resolution: available as a tail only
    t = th.p_for_lambda_star(1.01, 5, tail=True)
    assert 0 < t < 1e-60
    assert th.lambda_star_base_neutral(0.9, 5) > 1  # sanity
    with pytest.raises(DomainError, match="target.*too close to 1"):
        th.p_for_lambda_star(1.01, 5)
    with pytest.raises(DomainError, match="target.*too close to 1"):
        th.p_for_lambda_star(1.0001, 5, tail=True)
    # a large target: p close to b
    p = th.p_for_lambda_star(1e6, 5, 0.5)
    assert 0.5 < p < 0.5 + 1e-5 and th.lambda_star_base_neutral(p, 5) == pytest.approx(1e6, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------
# vectorisation and types

def test_vectorised_agrees_with_scalar():
    rng = np.random.default_rng(0)
    p = expit(rng.uniform(-3, 25, size=(4, 5)))
    b = p * rng.uniform(0.01, 0.99, size=(4, 5))
    c = rng.uniform(1.1, 20, size=(5,))  # broadcasts over rows
    lam = rng.uniform(0.5, 3, size=(4, 5))
    cases = [
        (th.lambda_star, (p, b, c)),
        (th.lambda_star_base_neutral, (p, c)),
        (th.fixed_point, (lam, p, b)),
        (th.fixed_point_tail, (lam, p, b)),
        (th.clip_safe_boundary, (p, c)),
        (th.c_for_lambda, (1 + lam, p, b)),
        (th.logit, (p,)),
    ]
    for f, args in cases:
        out = f(*args)
        assert isinstance(out, np.ndarray) and out.shape == (4, 5), f.__name__
        bargs = np.broadcast_arrays(*args)
        for i in np.ndindex(4, 5):
            s = f(*(float(a[i]) for a in bargs))
            assert isinstance(s, float)
            assert s == out[i] or s == pytest.approx(out[i], rel=1e-14), f.__name__
    targets = np.array([1.05, 1.2, 2.0, 10.0])
    ps = th.p_for_lambda_star(targets, 5.0, 0.5)
    assert ps.shape == (4,)
    for t, pv in zip(targets, ps):
        assert th.p_for_lambda_star(float(t), 5.0, 0.5) == pytest.approx(pv, rel=1e-15)


def test_scalar_returns_python_float():
    assert type(th.lambda_star(0.9, 0.5, 5)) is float
    assert type(th.lambda_star(np.float64(0.9), 0.5, 5)) is float
    assert isinstance(th.lambda_star([0.9], 0.5, 5), np.ndarray)


# ---------------------------------------------------------------------------------------------------------
# domain

@pytest.mark.parametrize("call,name", [
    (lambda: th.lambda_star(1.0, 0.5, 5), "p"),
    (lambda: th.lambda_star(0.0, 0.5, 5), "p"),
    (lambda: th.lambda_star(1.5, 0.5, 5), "p"),
    (lambda: th.lambda_star(0.9, 1.0, 5), "b"),
    (lambda: th.lambda_star(0.9, -0.1, 5), "b"),
    (lambda: th.lambda_star(0.9, 0.5, 1.0), "c"),
    (lambda: th.lambda_star(0.9, 0.5, 0.9), "c"),
    (lambda: th.lambda_star(0.9, 0.5, np.inf), "c"),
    (lambda: th.lambda_star(np.nan, 0.5, 5), "p"),
    (lambda: th.lambda_star(0.9, np.nan, 5), "b"),
    (lambda: th.lambda_star(0.9, 0.5, np.nan), "c"),
    (lambda: th.lambda_star("x", 0.5, 5), "p"),
    (lambda: th.lambda_star_base_neutral(0.9, 1.0), "c"),
    (lambda: th.fixed_point(np.inf, 0.9, 0.5), "lam"),
    (lambda: th.fixed_point(np.nan, 0.9, 0.5), "lam"),
    (lambda: th.fixed_point_tail(1.0, 0.9, 1.0), "b"),
    (lambda: th.logit(1.0), "x"),
    (lambda: th.clip_safe_boundary(0.9, 1.0), "c"),
    (lambda: th.is_clip_safe(1.1, 0.9, 2), "q"),
    (lambda: th.is_clip_safe(None, 0.9, 2, q_tail=-0.1), "q_tail"),
    (lambda: th.is_clip_safe(0.9, 0.9, 2, q_tail=0.1), "q_tail"),
    (lambda: th.c_for_lambda(1.0, 0.9, 0.5), "lam"),
    (lambda: th.c_for_lambda(1.2, 0.5, 0.9), "p"),
    (lambda: th.c_for_lambda(1.2, 0.9, 0.9), "p"),
    (lambda: th.p_for_lambda_star(1.0, 5), "target"),
    (lambda: th.p_for_lambda_star(np.inf, 5), "target"),
    (lambda: th.p_for_lambda_star(1.2, 1.0), "c"),
    (lambda: th.p_for_lambda_star(1.2, 5, 1.0), "b"),
])
def test_domain_errors_name_the_argument(call, name):
    with pytest.raises(DomainError) as e:
        call()
    assert str(e.value).startswith(name + " ") or f" {name} " in str(e.value)
    assert isinstance(e.value, ValueError)


def test_domain_error_messages():
    with pytest.raises(DomainError, match=r"^p must be in the open interval \(0, 1\); got 1\.0$"):
        th.lambda_star(1.0, 0.5, 5)
    with pytest.raises(DomainError, match=r"^p .*2 of 4 entries, first at index 1: 1\.5$"):
        th.lambda_star([0.9, 1.5, 0.8, 0.0], 0.5, 5)
    with pytest.raises(DomainError, match=r"first at index \(1, 0\)"):
        th.lambda_star([[0.9, 0.9], [0.9, 0.9]], 0.5, [[5, 5], [np.nan, 5]])
    with pytest.raises(DomainError, match="cannot be broadcast"):
        th.lambda_star([0.9, 0.8], [0.5, 0.4, 0.3], 5)


def test_theory_does_not_import_torch():
    code = "import sys, listopd.core.theory; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_p_equal_b_is_no_cliff_the_limit_from_both_sides():
    """p = b: extrapolation does nothing (q_λ = p), so λ* = +∞ — the limit of λ* as b → p from below, and the
    value for every b > p. The base-neutral form at p = 1/2 likewise."""
    assert th.lambda_star(0.9, 0.9, 5) == np.inf
    assert th.lambda_star_base_neutral(0.5, 5) == np.inf
    approaching = [float(th.lambda_star(0.9, 0.9 - d, 5)) for d in (1e-2, 1e-4, 1e-6, 1e-9)]
    assert approaching == sorted(approaching) and approaching[-1] > 1e6
    assert th.lambda_star(0.9, 0.95, 5) == np.inf
    assert th.fixed_point(3.0, 0.9, 0.9) == pytest.approx(0.9)
    assert th.lambda_star_or_none(0.9, 0.9, 5) == math.inf
    assert th.lambda_star_or_none(0.9, 0.9, 5, no_cliff=None) is None
    assert th.lambda_star_or_none(0.5, None, 5, form="base_neutral") == math.inf
