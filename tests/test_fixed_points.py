"""The rest points of the expected update at a two-class position, per clip mode (core/fixed_points.py)."""

from __future__ import annotations

import pytest

from listopd.core import theory
from listopd.core.fixed_points import advantage_gap, describe, rest_points

P, B, C = 0.97, 0.8, 5.0  # λ* = 1.782


@pytest.mark.parametrize("lam", [1.0, 1.3, 2.0, 4.0, 8.0])
def test_uncapped_rest_point_is_q_lambda(lam):
    pts = rest_points(lam, P, B, C, "none")
    assert pts["stable"] == [pytest.approx(float(theory.fixed_point(lam, P, B)), rel=1e-9)]
    assert pts["unstable"] == []


def test_teacher_ratio_rests_at_q_lambda_below_lambda_star_and_runs_to_q1_above():
    lam_star = float(theory.lambda_star(P, B, C))
    below = rest_points(0.98 * lam_star, P, B, C, "teacher_ratio")
    assert below["stable"] == [pytest.approx(float(theory.fixed_point(0.98 * lam_star, P, B)), rel=1e-9)]
    above = rest_points(1.02 * lam_star, P, B, C, "teacher_ratio")
    assert above["stable"] == [] and above["drift_high"] == 1  # the tail is pushed to 0, not grown
    assert describe(above) == "q → 1 (tail → 0)"
    assert rest_points(1.02 * lam_star, P, B, C, "two_sided")["stable"] == []


def test_base_ratio_keeps_a_rest_point_at_every_lambda():
    for lam in (2.0, 4.0, 8.0):
        (q,) = rest_points(lam, P, B, C, "base_ratio")["stable"]
        assert (1 - P) / C < 1 - q < 1 - P  # inside the clip-safe band, below the teacher's tail


def test_gap_sign_means_the_direction_of_the_update():
    """g > 0 below a stable rest point: the modal mass grows there (the loss's gradient, checked directly)."""
    import math

    import torch

    from listopd.core.loss import listopd_expected_loss

    lam = 1.5
    q = float(theory.fixed_point(lam, P, B)) - 0.05
    z = torch.tensor(math.log(q / (1 - q)), dtype=torch.float64, requires_grad=True)
    table = torch.stack([torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)])[None, None]
    log = lambda x: torch.tensor([[[math.log(x), math.log1p(-x)]]], dtype=torch.float64)  # noqa: E731
    out = listopd_expected_loss(table, log(P), log(B), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1),
                                reward_scale=lam, clip_strength=C, clip_mode="none")
    out.loss.backward()
    assert advantage_gap([math.log(q / (1 - q))], lam, P, B, C, "none")[0] > 0 and float(z.grad) < 0


# ---------------------------------------------------------------------------------------------------------
# the teacher_ratio rest point over the whole vocabulary (capped_full_vocab_keep)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from listopd.core.fixed_points import capped_full_vocab_keep, capped_rest_point, full_vocab_keep  # noqa: E402
from listopd.core.loss import extrapolated_advantage  # noqa: E402


def _position(seed=1, v=12, teacher_keep=0.99, base_keep=0.9):
    """Two contract-keeping tokens and v − 2 breaking ones, teacher and base log-probs."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(v, bool)
    keep[:2] = True

    def dist(kept):
        x = rng.dirichlet(np.ones(v))
        x[:2] *= kept / x[:2].sum()
        x[2:] *= (1 - kept) / x[2:].sum()
        return np.log(x)

    return dist(teacher_keep), dist(base_keep), keep


def _advantage(t, b, ell, lam, c=C):
    adv, _ = extrapolated_advantage(torch.tensor(t), torch.tensor(b), torch.tensor(ell), reward_scale=lam,
                                    clip_strength=c, clip_mode="teacher_ratio")
    return adv.numpy()


def _flow(t, b, lam, steps=60_000, rate=1.0, c=C):
    """The expected update in logit space, q·(A − Ā) per step, from the warm start (q = π_B), under
    teacher_ratio (_plain_flow below; its advantage is held to the loss's own)."""
    return _plain_flow(t, b, lam, c, "teacher_ratio", steps=steps, rate=rate)


def test_capped_rest_point_is_the_base_at_0_and_the_teacher_at_1():
    t, b, keep = _position()
    got = capped_full_vocab_keep(t, b, keep, C, lambdas=(0.0, 1.0))
    assert got == pytest.approx([np.exp(b[keep]).sum(), np.exp(t[keep]).sum()], abs=1e-12)


@pytest.mark.parametrize("lam", [1.5, 2.0, 3.0, 4.0])
def test_capped_rest_point_above_1_is_a_rest_point_of_the_loss_s_own_advantage(lam):
    t, b, keep = _position()
    ell = capped_rest_point(t, b, C, lam)
    alive = np.isfinite(ell)
    assert np.exp(ell[alive]).sum() == pytest.approx(1.0, abs=1e-12)
    a = _advantage(t, b, np.where(alive, ell, 0.0), lam)[alive]
    assert a.max() - a.min() < 1e-9  # every survivor at one advantage κ …
    assert np.all(t[alive] - ell[alive] <= np.log(C) + 1e-12)  # … where the cap does not bind
    kappa = a.mean()
    # a dead token's advantage peaks at the cap's edge, below κ: nowhere for it to rest
    assert np.all(np.log(C) + (lam - 1) * (t - b)[~alive] < kappa)


def test_capped_rest_point_below_1_is_where_the_flow_goes():
    t, b, keep = _position()
    ell = _flow(t, b, 0.5, steps=20_000)
    assert capped_full_vocab_keep(t, b, keep, C, lambdas=(0.5,))[0] == pytest.approx(np.exp(ell[keep]).sum(),
                                                                                   abs=1e-4)


def test_capped_rest_point_bounds_the_tail_the_flow_keeps():
    """The documented example: at λ = 2 the flow from the warm start kills every tail token in transit (keeping
    mass 1) although a rest point with survivors exists (the bound: 0.996)."""
    t, b, keep = _position()
    bound = capped_full_vocab_keep(t, b, keep, C, lambdas=(2.0,))[0]
    ell = _flow(t, b, 2.0)
    assert bound == pytest.approx(0.99608, abs=1e-5)
    assert np.exp(ell[keep]).sum() > 1 - 1e-4 > bound


def test_a_cap_that_never_binds_gives_the_uncapped_fixed_point():
    t, b, keep = _position(teacher_keep=0.9, base_keep=0.8)
    lams = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
    assert capped_full_vocab_keep(t, b, keep, 1e30, lambdas=lams) == pytest.approx(
        full_vocab_keep(t, b, keep, lams), rel=1e-9)


# ---------------------------------------------------------------------------------------------------------
# the base_ratio rest point over the whole vocabulary, and where two_sided leaves teacher_ratio's

from listopd.core.fixed_points import base_ratio_rest_point, two_sided_departs  # noqa: E402


def _random_position(rng, v_max=30):
    v = int(rng.integers(3, v_max))
    t, b = rng.normal(0, 3, v), rng.normal(0, 3, v)
    return t - np.logaddexp.reduce(t), b - np.logaddexp.reduce(b)


def _loss_advantage(t, b, ell, lam, c, mode):
    adv, _ = extrapolated_advantage(torch.tensor(t), torch.tensor(b), torch.tensor(ell), reward_scale=lam,
                                    clip_strength=c, clip_mode=mode)
    return adv.numpy()


def _advantage_np(t, b, ell, lam, c, mode):
    """The loss's advantage written out in numpy for the flows' speed (held to the loss's own below)."""
    log_c = np.log(c)
    teacher = np.minimum(t - ell, log_c) if mode != "two_sided" else np.clip(t - ell, -log_c, log_c)
    base = np.clip(b - ell, -log_c, log_c) if mode == "base_ratio" else b - ell
    return lam * teacher + (1 - lam) * base


@pytest.mark.parametrize("mode", ["teacher_ratio", "two_sided", "base_ratio"])
def test_the_flows_use_the_loss_s_own_advantage(mode):
    rng = np.random.default_rng(5)
    t, b = _random_position(rng)
    ell = rng.normal(-3, 4, len(t))
    assert _advantage_np(t, b, ell, 2.5, C, mode) == pytest.approx(_loss_advantage(t, b, ell, 2.5, C, mode),
                                                                   abs=1e-12)


def _npg_flow(t, b, lam, c, mode, steps=30_000, rate=0.01):
    """Every log-mass moves at its advantage's rate, ℓ += rate·(A − Ā), renormalised (the natural-gradient
    flow of the expected update), from the warm start."""
    ell = b.copy()
    for _ in range(steps):
        a = _advantage_np(t, b, ell, lam, c, mode)
        ell = ell + rate * (a - (np.exp(ell) * a).sum())
        ell -= np.logaddexp.reduce(ell)
    return ell


def _plain_flow(t, b, lam, c, mode, steps=60_000, rate=0.05):
    """The expected update in logit space, z += rate·q·(A − Ā) (one step per rollout), from the warm start."""
    z = b.copy()
    for _ in range(steps):
        x = z - np.logaddexp.reduce(z)
        q = np.exp(x)
        a = _advantage_np(t, b, x, lam, c, mode)
        z = z + rate * q * (a - (q * a).sum())
    return z - np.logaddexp.reduce(z)


@pytest.mark.parametrize("seed", range(6))
def test_base_ratio_rest_point_is_a_rest_point_of_the_loss_s_own_advantage(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        t, b = _random_position(rng)
        lam, c = float(rng.choice([1.25, 2.0, 3.0, 5.0])), float(rng.choice([1.5, 5.0, 20.0]))
        ell = base_ratio_rest_point(t, b, c, lam)
        alive = np.isfinite(ell)
        assert np.exp(ell[alive]).sum() == pytest.approx(1.0, abs=1e-10)
        x = np.where(alive, ell, -60.0)
        a = _loss_advantage(t, b, x, lam, c, "base_ratio")
        kappa = a[alive].max()
        flat = np.isclose(a[alive], np.log(c), atol=1e-9)  # tokens sharing the flat A = L at κ = L
        assert a[alive].max() - a[alive].min() < 1e-8  # every live token at one advantage κ …
        falling = _loss_advantage(t, b, x + 1e-6, lam, c, "base_ratio") < _loss_advantage(t, b, x - 1e-6, lam,
                                                                                       c, "base_ratio")
        assert np.all(falling[alive] | flat | (x[alive] >= -1e-12))  # … where it falls with the token's mass
        assert np.all(a[~alive] <= kappa + 1e-9)  # a dead token's advantage (L) cannot make it grow back
        # the band around the teacher: π_T/c ≤ q ≤ π_T·c^((λ−1)/λ)·e^(−κ/λ) for every live token (below π_T/c
        # only on the flat, at κ = L)
        lt = t[alive]
        assert np.all((ell[alive] >= lt - np.log(c) - 1e-9) | flat)
        assert np.all(ell[alive] <= lt + ((lam - 1) * np.log(c) - kappa) / lam + 1e-9)


def test_base_ratio_rest_point_is_where_the_natural_gradient_flow_goes_when_it_is_unique():
    """κ < log c: no token can die (a dead token's advantage, log c, would grow it back), so the rest point is
    unique, and the flow in which every log-mass moves at its advantage's rate ends there."""
    rng = np.random.default_rng(100)
    checked = 0
    while checked < 4:
        t, b = _random_position(rng, v_max=12)
        lam = float(rng.choice([1.5, 2.0, 3.0]))
        ell = base_ratio_rest_point(t, b, C, lam)
        if not _loss_advantage(t, b, ell, lam, C, "base_ratio").max() < np.log(C) - 0.1:
            continue
        checked += 1
        assert np.exp(_npg_flow(t, b, lam, C, "base_ratio")) == pytest.approx(np.exp(ell), abs=1e-6)


@pytest.mark.parametrize("lam", [2.0, 3.0])
def test_base_ratio_rest_point_is_where_the_plain_flow_goes(lam):
    """The expected update itself (logit space, one step per rollout) ends there too, on the example below; it
    is slow for small tokens (a token squeezed in transit grows back at a rate ∝ its mass), hence this one."""
    t, b = np.log([0.9, 0.02, 0.05, 0.03]), np.log([0.6, 0.0005, 0.2, 0.1995])
    assert np.exp(_plain_flow(t, b, lam, C, "base_ratio", steps=40_000, rate=0.5)) == pytest.approx(
        np.exp(base_ratio_rest_point(t, b, C, lam)), abs=1e-4)


def test_base_ratio_keeps_the_position_where_teacher_ratio_lets_a_boosted_token_take_it():
    """A breaking token the base almost never emits (0.05 %) but the teacher gives 2 %: q_λ boosts it past the
    modal token at λ = 3; under teacher_ratio the rest point with the most survivors hands it the position,
    under base_ratio every token stays within a band around the teacher's mass."""
    t = np.log([0.9, 0.02, 0.05, 0.03])
    b = np.log([0.6, 0.0005, 0.2, 0.1995])
    keep = np.array([True, False, False, False])
    assert np.exp(capped_rest_point(t, b, C, 3.0)[keep]).sum() < 1e-9
    q = np.exp(base_ratio_rest_point(t, b, C, 3.0))
    assert q[0] == pytest.approx(0.9337, abs=1e-4)
    assert np.all(q >= np.exp(t) / C - 1e-12)
    assert base_ratio_rest_point(t, b, C, 1.0) == pytest.approx(t)


def test_two_sided_departs_from_teacher_ratio_only_where_a_token_rests_above_c_times_the_teacher():
    t = np.log([0.9, 0.02, 0.05, 0.03])
    b = np.log([0.6, 0.0005, 0.2, 0.1995])
    assert not two_sided_departs(t, b, C, 1.25)  # the boosted token rests below c·π_T: the same rest point
    ell = capped_rest_point(t, b, C, 2.0)
    assert ell[1] > t[1] + np.log(C) and two_sided_departs(t, b, C, 2.0)
    # where it departs, the two flows disagree on the outcome (the token dies small, or takes the position)
    assert np.exp(_npg_flow(t, b, 2.0, C, "two_sided", steps=20_000))[1] > 0.99
    assert np.exp(_plain_flow(t, b, 2.0, C, "two_sided"))[1] < 1e-3
    # where it does not, two_sided's flow ends at teacher_ratio's rest point
    assert np.exp(_npg_flow(t, b, 1.25, C, "two_sided")) == pytest.approx(np.exp(capped_rest_point(t, b, C, 1.25)),
                                                                          abs=1e-6)

