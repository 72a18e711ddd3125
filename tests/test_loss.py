"""listopd.core.loss: advantage, clip modes, PPO surrogate, global-token normalisation."""

import math

import pytest
import torch

from listopd.util.errors import DomainError
from listopd.core.loss import extrapolated_advantage, listopd_expected_loss, listopd_loss



@pytest.fixture(autouse=True)
def _float64():
    """These tests compare gradients to 1e-9: float64 here, restored afterwards for the other modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _random_logps(b=3, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [-torch.rand(b, t, generator=g) * 4 for _ in range(4)]  # lp_new, lp_old, lp_teacher, lp_base


def test_lambda_one_is_plain_opd_and_base_cancels():
    lp_new, lp_old, lp_t, lp_b = _random_logps()
    adv, binds = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=1.0)
    assert torch.equal(adv, lp_t - lp_old)
    assert not binds.any()
    # the base does not matter at λ = 1, even a non-finite one
    adv_inf, _ = extrapolated_advantage(lp_t, torch.full_like(lp_b, -math.inf), lp_old, reward_scale=1.0)
    assert torch.equal(adv_inf, adv)

    # the loss gradient is the plain OPD policy gradient −(lp_t − lp_old)·∇lp_new / N
    x = lp_old.clone().requires_grad_(True)  # one optimiser step per rollout: lp_new == lp_old
    mask = torch.ones_like(x)
    listopd_loss(x, lp_old, lp_t, lp_b, mask, reward_scale=1.0, clip_mode="none").loss.backward()
    assert torch.allclose(x.grad, -(lp_t - lp_old) / mask.numel())


def test_advantage_formula_and_extrapolation_direction():
    lp_new, lp_old, lp_t, lp_b = _random_logps(seed=1)
    lam = 1.7
    adv, _ = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=lam)
    assert torch.allclose(adv, lam * lp_t - (lam - 1) * lp_b - lp_old)
    # λ > 1 amplifies only the teacher-minus-base direction
    assert torch.allclose(adv - (lp_t - lp_old), (lam - 1) * (lp_t - lp_b))


def test_teacher_ratio_cap_binds_exactly_where_the_ratio_exceeds_c():
    lp_old = torch.log(torch.tensor([[0.5, 0.01, 0.2]]))
    lp_t = torch.log(torch.tensor([[0.9, 0.2, 0.2]]))  # ratios 1.8, 20, 1
    lp_b = torch.log(torch.tensor([[0.4, 0.05, 0.3]]))
    c, lam = 5.0, 1.5
    adv, binds = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=lam, clip_strength=c,
                                        clip_mode="teacher_ratio")
    assert binds.tolist() == [[False, True, False]]
    expected = lam * torch.minimum(lp_t - lp_old, torch.tensor(math.log(c))) + (1 - lam) * (lp_b - lp_old)
    assert torch.allclose(adv, expected)
    assert adv[0, 1] == pytest.approx(lam * math.log(5.0) + (1 - lam) * math.log(0.05 / 0.01))
    out = listopd_loss(lp_old.clone(), lp_old, lp_t, lp_b, torch.ones_like(lp_old), reward_scale=lam,
                       clip_strength=c)
    assert out.stats["cap_bind_frac"] == pytest.approx(1 / 3)


def test_two_sided_cap_bounds_the_negative_side_too():
    lp_old = torch.log(torch.tensor([[0.5, 0.01, 0.2, 0.3]]))
    lp_t = torch.log(torch.tensor([[0.9, 0.2, 0.2, 1e-20]]))  # ratios 1.8, 20, 1, ~3e-20 (−45 nats)
    lp_b = torch.log(torch.tensor([[0.4, 0.05, 0.3, 0.2]]))
    c, lam = 5.0, 1.5
    adv, binds = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=lam, clip_strength=c, clip_mode="two_sided")
    assert binds.tolist() == [[False, True, False, True]]
    assert adv[0, 3] == pytest.approx(lam * -math.log(c) + (1 - lam) * math.log(0.2 / 0.3), rel=1e-6)
    uncapped, _ = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=lam, clip_mode="none")
    assert float(uncapped[0, 3]) < -60 < float(adv[0, 3])
    same, _ = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=lam, clip_strength=c, clip_mode="teacher_ratio")
    assert torch.allclose(adv[0, :3], same[0, :3])  # the positive side is teacher_ratio's


def test_base_ratio_caps_the_base_term_both_ways():
    lp_old = torch.log(torch.tensor([[0.5, 0.6, 0.01]]))
    lp_t = torch.log(torch.tensor([[0.9, 0.3, 0.02]]))
    lp_b = torch.log(torch.tensor([[0.4, 0.01, 0.5]]))  # student/base ratios 1.25, 60, 0.02
    c, lam = 5.0, 2.0
    adv, binds = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=lam, clip_strength=c, clip_mode="base_ratio")
    assert binds.tolist() == [[False, True, True]]
    log_c = math.log(c)
    expected = [lam * math.log(0.9 / 0.5) + (lam - 1) * math.log(0.5 / 0.4),
                lam * math.log(0.3 / 0.6) + (lam - 1) * log_c,  # the student prefers it 60× to the base: capped
                lam * math.log(0.02 / 0.01) - (lam - 1) * log_c]
    assert adv[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_two_token_expected_gradient_matches_analytic():
    """d/dz of the expected surrogate at a two-token position equals −q(1−q)(A_modal − A_tail)."""
    p, b, q, lam, c = 0.99, 0.8, 0.9, 1.4, 3.0
    z = torch.tensor(math.log(q / (1 - q)), requires_grad=True)  # logit of the modal token
    logits = torch.stack([z, torch.tensor(0.0)])
    lp = torch.log_softmax(logits, 0)
    lp_t = torch.log(torch.tensor([p, 1 - p]))
    lp_b = torch.log(torch.tensor([b, 1 - b]))
    lp_old = lp.detach()
    a_modal = lam * min(math.log(p / q), math.log(c)) + (1 - lam) * math.log(b / q)
    a_tail = lam * min(math.log((1 - p) / (1 - q)), math.log(c)) + (1 - lam) * math.log((1 - b) / (1 - q))
    analytic = -q * (1 - q) * (a_modal - a_tail)  # gradient of the loss (= −objective)

    # exact expectation: both tokens, weighted by their probability
    out = listopd_loss(lp[None], lp_old[None], lp_t[None], lp_b[None], lp_old.exp()[None],
                       reward_scale=lam, clip_strength=c, num_tokens=1.0)
    (g_exact,) = torch.autograd.grad(out.loss, z, retain_graph=True)
    assert g_exact.item() == pytest.approx(analytic, rel=1e-9)
    assert out.stats["cap_bind_frac"] == 0  # ratios p/q = 1.1 and (1−p)/(1−q) = 0.1 are both below c

    # sampled: N tokens from the student; the mean gradient agrees within sampling error
    n = 200_000
    gen = torch.Generator().manual_seed(0)
    tokens = torch.multinomial(lp_old.exp(), n, replacement=True, generator=gen)
    lp_s = lp[tokens][None]
    out = listopd_loss(lp_s, lp_s.detach(), lp_t[tokens][None], lp_b[tokens][None], torch.ones(1, n),
                       reward_scale=lam, clip_strength=c)
    (g_sampled,) = torch.autograd.grad(out.loss, z)
    # per-sample gradient is −A(y)·(1[y=modal] − q); its std bounds the error of the mean
    per_sample = torch.where(tokens == 0, -(a_modal) * (1 - q), a_tail * q)
    se = per_sample.std().item() / math.sqrt(n)
    assert abs(g_sampled.item() - analytic) < 5 * se


def test_two_token_gradient_when_tail_cap_binds():
    """With q above the clip-safe boundary the tail's teacher term is capped at log c."""
    p, b, q, lam, c = 0.99, 0.8, 0.999, 1.4, 3.0  # tail ratio (1−p)/(1−q) = 10 > c
    z = torch.tensor(math.log(q / (1 - q)), requires_grad=True)
    lp = torch.log_softmax(torch.stack([z, torch.tensor(0.0)]), 0)
    lp_t, lp_b = torch.log(torch.tensor([p, 1 - p])), torch.log(torch.tensor([b, 1 - b]))
    out = listopd_loss(lp[None], lp.detach()[None], lp_t[None], lp_b[None], lp.detach().exp()[None],
                       reward_scale=lam, clip_strength=c, num_tokens=1.0)
    (g,) = torch.autograd.grad(out.loss, z)
    a_modal = lam * math.log(p / q) + (1 - lam) * math.log(b / q)
    a_tail = lam * math.log(c) + (1 - lam) * math.log((1 - b) / (1 - q))
    assert g.item() == pytest.approx(-q * (1 - q) * (a_modal - a_tail), rel=1e-9)
    assert out.stats["cap_bind_frac"] == pytest.approx(0.5)  # the tail token (unweighted count)


def test_accumulated_half_batches_equal_one_batch():
    """Token-mean over the global token count: two micro-batches accumulate to the one-batch gradient."""
    g = torch.Generator().manual_seed(3)
    b, t = 6, 7
    logits = torch.randn(b, t, generator=g, requires_grad=True)
    lp_new = torch.nn.functional.logsigmoid(logits)
    lp_old = lp_new.detach() + 0.05 * torch.randn(b, t, generator=g)  # ratios ≠ 1: PPO clip active
    lp_t, lp_b = -torch.rand(b, t, generator=g) * 3, -torch.rand(b, t, generator=g) * 3
    mask = (torch.rand(b, t, generator=g) > 0.3).double()  # ragged completion lengths
    mask[0] = 0  # an empty completion
    kw = dict(reward_scale=1.3, clip_strength=2.0)

    (g_full,) = torch.autograd.grad(listopd_loss(lp_new, lp_old, lp_t, lp_b, mask, **kw).loss, logits,
                                  retain_graph=True)
    n = mask.sum()
    total = torch.zeros_like(logits)
    for rows in (slice(0, 2), slice(2, 6)):  # unequal halves with unequal token counts
        loss = listopd_loss(lp_new[rows], lp_old[rows], lp_t[rows], lp_b[rows], mask[rows],
                            num_tokens=n, **kw).loss
        (gr,) = torch.autograd.grad(loss, logits, retain_graph=True)
        total += gr
    assert torch.allclose(total, g_full, atol=1e-12)
    # the per-micro-batch mean (the usual bug) does not
    naive = torch.zeros_like(logits)
    for rows in (slice(0, 2), slice(2, 6)):
        loss = listopd_loss(lp_new[rows], lp_old[rows], lp_t[rows], lp_b[rows], mask[rows], **kw).loss
        naive += torch.autograd.grad(loss, logits, retain_graph=True)[0] / 2
    assert not torch.allclose(naive, g_full, atol=1e-6)


def test_ppo_ratio_clip_stops_gradient_outside_the_trust_region():
    lp_old = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    lp_new = torch.log(torch.tensor([[0.7, 0.7, 0.3, 0.3]])).requires_grad_(True)  # ρ = 1.4, 1.4, .6, .6
    lp_t = torch.log(torch.tensor([[0.9, 0.1, 0.9, 0.1]]))  # A > 0, < 0, > 0, < 0 (λ = 1)
    out = listopd_loss(lp_new, lp_old, lp_t, lp_t, torch.ones(1, 4), reward_scale=1.0, clip_mode="none",
                       eps_low=0.2, eps_high=0.3)
    out.loss.backward()
    # ρ=1.4 > 1+ε_high with A>0: clipped, no gradient; ρ=1.4 with A<0: unclipped (min picks ρ·A)
    # ρ=0.6 < 1−ε_low with A<0: clipped; ρ=0.6 with A>0: unclipped
    assert lp_new.grad[0, 0] == 0 and lp_new.grad[0, 3] == 0
    assert lp_new.grad[0, 1] != 0 and lp_new.grad[0, 2] != 0
    assert out.stats["ppo_clip_frac"] == pytest.approx(0.5)


def test_truncated_is_weights_cap_the_sampler_ratio():
    lp_old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    lp_sampler = torch.log(torch.tensor([[0.5, 0.05, 0.4]]))  # IS ratios 1, 10, 1.25
    x = lp_old.clone().requires_grad_(True)
    lp_t = torch.log(torch.tensor([[0.6, 0.6, 0.6]]))
    out = listopd_loss(x, lp_old, lp_t, lp_t, torch.ones(1, 3), reward_scale=1.0, clip_strength=5.0,
                       clip_mode="truncated_is", lp_sampler=lp_sampler)
    out.loss.backward()
    adv = (lp_t - lp_old)[0, 0].item()
    assert torch.allclose(x.grad, -adv * torch.tensor([[1.0, 5.0, 1.25]]) / 3)
    assert out.stats["cap_bind_frac"] == pytest.approx(1 / 3)
    # without a sampler the weights are 1: it never binds
    x.grad = None
    out = listopd_loss(x, lp_old, lp_t, lp_t, torch.ones(1, 3), reward_scale=1.0, clip_strength=5.0,
                       clip_mode="truncated_is")
    out.loss.backward()
    assert torch.allclose(x.grad, torch.full((1, 3), -adv / 3)) and out.stats["cap_bind_frac"] == 0


def test_stale_rollout_weights_cap_the_sampler_ratio_under_any_clip_mode():
    """rollout_is_cap (rollout_ahead): the same truncated-IS weight as truncated_is, on top of the teacher cap,
    with its own statistics; the cap's own binding fraction still describes the teacher cap."""
    lp_old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    lp_sampler = torch.log(torch.tensor([[0.5, 0.05, 0.4]]))  # IS ratios 1, 10, 1.25
    x = lp_old.clone().requires_grad_(True)
    lp_t = torch.log(torch.tensor([[0.6, 0.6, 0.6]]))
    out = listopd_loss(x, lp_old, lp_t, lp_t, torch.ones(1, 3), reward_scale=1.0, clip_strength=5.0,
                       clip_mode="teacher_ratio", lp_sampler=lp_sampler, rollout_is_cap=2.0)
    out.loss.backward()
    adv = (lp_t - lp_old)[0, 0].item()
    assert torch.allclose(x.grad, -adv * torch.tensor([[1.0, 2.0, 1.25]]) / 3)
    assert out.stats["cap_bind_frac"] == 0  # the teacher ratio 1.2 is below c = 5
    assert out.stats["is_cap_frac"] == pytest.approx(1 / 3)
    assert out.stats["is_weight_mean"] == pytest.approx((1 + 2 + 1.25) / 3)
    log_r = torch.log(torch.tensor([1.0, 10.0, 1.25]))
    assert out.stats["sampler_kl_k3"] == pytest.approx(float((log_r.exp() - 1 - log_r).mean()))
    # without a cap the loss is the synchronous one, and no staleness is logged
    x.grad = None
    out = listopd_loss(x, lp_old, lp_t, lp_t, torch.ones(1, 3), reward_scale=1.0, lp_sampler=lp_sampler)
    out.loss.backward()
    assert torch.allclose(x.grad, torch.full((1, 3), -adv / 3)) and "is_weight_mean" not in out.stats


def test_expected_estimator_logs_staleness_without_weighting():
    torch.manual_seed(0)
    table = torch.log_softmax(torch.randn(2, 3, 5), -1)
    teacher, base = torch.log_softmax(torch.randn(2, 3, 5), -1), torch.log_softmax(torch.randn(2, 3, 5), -1)
    tokens, mask = torch.randint(0, 5, (2, 3)), torch.ones(2, 3)
    lp_sampler = table.gather(-1, tokens[..., None]).squeeze(-1) - 0.3  # the sampler gave each token less
    kw = dict(reward_scale=1.5, clip_strength=5.0)
    plain = listopd_expected_loss(table, teacher, base, tokens, mask, **kw)
    stale = listopd_expected_loss(table, teacher, base, tokens, mask, lp_sampler=lp_sampler, rollout_is_cap=2.0, **kw)
    assert torch.equal(plain.loss, stale.loss)
    assert stale.stats["is_weight_mean"] == pytest.approx(float(torch.tensor(0.3).exp()))


def test_dual_clip_bounds_negative_advantage_loss():
    lp_old = torch.log(torch.tensor([[0.1, 0.1]]))
    lp_new = torch.log(torch.tensor([[0.9, 0.12]])).requires_grad_(True)  # ρ = 9 (exploded), 1.2
    lp_t = torch.log(torch.tensor([[0.01, 0.01]]))  # A = log 0.1 < 0 for both
    out = listopd_loss(lp_new, lp_old, lp_t, lp_t, torch.ones(1, 2), reward_scale=1.0, clip_strength=3.0,
                       clip_mode="dual_clip")
    out.loss.backward()
    a = math.log(0.1)
    # token 0: min(9A, 1.2A) = 9A < 3A → dual clip: objective c·A, constant, no gradient
    assert lp_new.grad[0, 0] == 0 and lp_new.grad[0, 1] != 0
    assert out.loss.item() == pytest.approx(-(3.0 * a + 1.2 * a) / 2)
    assert out.stats["cap_bind_frac"] == pytest.approx(0.5)


def test_tensor_lambda_trains_independent_rows():
    """One λ per row (the simulator's batched grid) equals separate calls with scalar λ."""
    lp_new, lp_old, lp_t, lp_b = _random_logps(b=3, t=4, seed=5)
    lams = torch.tensor([[1.0], [1.2], [2.0]])
    adv, _ = extrapolated_advantage(lp_t, lp_b, lp_old, reward_scale=lams, clip_strength=3.0,
                                    clip_mode="teacher_ratio")
    for i, lam in enumerate([1.0, 1.2, 2.0]):
        row, _ = extrapolated_advantage(lp_t[i:i + 1], lp_b[i:i + 1], lp_old[i:i + 1], reward_scale=lam,
                                        clip_strength=3.0, clip_mode="teacher_ratio")
        assert torch.allclose(adv[i:i + 1], row)


@pytest.mark.parametrize("kwargs, word", [
    (dict(reward_scale=0.0), "reward_scale"),
    (dict(reward_scale=float("nan")), "reward_scale"),
    (dict(reward_scale=1.2, clip_strength=1.0), "clip_strength"),
    (dict(reward_scale=1.2, clip_mode="bogus"), "clip_mode"),
    (dict(reward_scale=1.2, eps_low=0.0), "eps_low"),
    (dict(reward_scale=1.2, eps_high=1.5), "eps_high"),
])
def test_bad_settings_are_refused_by_name(kwargs, word):
    lp = torch.zeros(1, 2)
    with pytest.raises(DomainError, match=word):
        listopd_loss(lp, lp, lp, lp, torch.ones(1, 2), **kwargs)


def test_stats_report_teacher_kl_estimators():
    lp_old = torch.log(torch.tensor([[0.5, 0.25]]))
    lp_t = torch.log(torch.tensor([[0.25, 0.25]]))
    out = listopd_loss(lp_old.clone(), lp_old, lp_t, lp_t, torch.ones(1, 2), reward_scale=1.0)
    # log r = log π_T/π_S = [log .5, 0]; k1 = mean(−log r); k3 = mean(r − 1 − log r)
    assert out.stats["teacher_kl_k1"] == pytest.approx(math.log(2) / 2)
    assert out.stats["teacher_kl_k3"] == pytest.approx((0.5 - 1 + math.log(2)) / 2)
    assert out.stats["tokens"] == 2
