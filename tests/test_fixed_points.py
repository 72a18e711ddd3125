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
    """The expected update in logit space, q·(A − Ā) per step, from the warm start (q = π_B); A written out
    (teacher log-ratio capped above at log c) for speed — the rest-point test holds it to the loss's own."""
    z = b.copy()
    for _ in range(steps):
        ell = z - np.logaddexp.reduce(z)
        q = np.exp(ell)
        a = lam * np.minimum(t - ell, np.log(c)) + (1 - lam) * (b - ell)
        z = z + rate * q * (a - (q * a).sum())
    return z - np.logaddexp.reduce(z)


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
