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
