"""The expected (Rao–Blackwellised) ListOPD estimator: same expected gradient as the sampled-token loss,
checked against an independent closed form (λ = 1, no cap: the gradient of the per-position reverse KL)
and against a Monte-Carlo average of the sampled-token loss (λ > 1 with the teacher-ratio cap binding);
and the trainer runs with it."""

import json

import pytest
import torch

from listopd.util.errors import ListopdError
from listopd.core.loss import listopd_expected_loss, listopd_loss
from listopd.train.opd import run_opd
from tiny_world import opd_config


def tables(seed: int, b=2, t=3, v=5, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = (spread * torch.randn(b, t, v, generator=g)).requires_grad_(True)
    teacher = torch.log_softmax(spread * torch.randn(b, t, v, generator=g), -1)
    base = torch.log_softmax(spread * torch.randn(b, t, v, generator=g), -1)
    mask = torch.ones(b, t)
    mask[1, 2] = 0  # a padded position takes no part
    return logits, teacher, base, mask


def test_lambda_one_without_cap_is_the_gradient_of_the_reverse_kl():
    logits, teacher, base, mask = tables(0)
    table = torch.log_softmax(logits, -1)
    tokens = torch.zeros(mask.shape, dtype=torch.long)
    out = listopd_expected_loss(table, teacher, base, tokens, mask, reward_scale=1.0, clip_mode="none")
    (grad,) = torch.autograd.grad(out.loss, logits)

    logits2 = logits.detach().clone().requires_grad_(True)
    q = torch.log_softmax(logits2, -1)
    kl = (q.exp() * (q - teacher)).sum(-1)  # KL(π_S ‖ π_T) at each position
    ((kl * mask).sum() / mask.sum()).backward()
    torch.testing.assert_close(grad, logits2.grad, atol=1e-6, rtol=1e-5)
    assert grad[1, 2].abs().max() == 0


@pytest.mark.parametrize("clip_mode", ["teacher_ratio", "two_sided", "base_ratio", "none", "dual_clip"])
def test_expected_gradient_is_the_mean_sampled_gradient(clip_mode):
    """λ = 1.6, c = 1.5 (the cap binds on many tokens): the average over 4,000 sampled tokens per position of
    listopd_loss's gradient converges to listopd_expected_loss's gradient."""
    logits, teacher, base, mask = tables(1)
    kwargs = dict(reward_scale=1.6, clip_strength=1.5, clip_mode=clip_mode)
    table = torch.log_softmax(logits, -1)
    out = listopd_expected_loss(table, teacher, base, torch.zeros(mask.shape, dtype=torch.long), mask, **kwargs)
    (expected,) = torch.autograd.grad(out.loss, logits)

    n = 4000
    g = torch.Generator().manual_seed(2)
    b, t, v = table.shape
    draws = torch.multinomial(table.detach().exp().reshape(b * t, v), n, replacement=True, generator=g)
    draws = draws.reshape(b, t, n).permute(2, 0, 1)  # [n, B, T]
    rep = lambda x: x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, t, v)  # noqa: E731
    pick = lambda x: rep(x).gather(-1, draws.reshape(n * b, t, 1)).squeeze(-1)  # noqa: E731
    lp = pick(torch.log_softmax(logits, -1))
    sampled = listopd_loss(lp, lp.detach(), pick(teacher), pick(base), mask.repeat(n, 1),
                           num_tokens=mask.sum() * n, **kwargs)
    (mc,) = torch.autograd.grad(sampled.loss, logits)
    assert out.stats["cap_bind_frac"] >= 0 and sampled.stats["tokens"] == mask.sum() * n
    scale = float(expected.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(mc, expected, atol=0.06 * scale, rtol=0)
    # and the sampled gradient from one token per position is far from it (the noise the estimator removes)
    lp = pick(torch.log_softmax(logits, -1))
    one = listopd_loss(lp[:b], lp[:b].detach(), pick(teacher)[:b], pick(base)[:b], mask, **kwargs)
    (single,) = torch.autograd.grad(one.loss, logits)
    assert float((single - expected).abs().max()) > 0.06 * scale


def test_truncated_is_is_refused():
    logits, teacher, base, mask = tables(3)
    with pytest.raises(ValueError, match="sampler mismatch"):
        listopd_expected_loss(torch.log_softmax(logits, -1), teacher, base, torch.zeros(mask.shape, dtype=torch.long),
                              mask, reward_scale=1.2, clip_mode="truncated_is")


@pytest.mark.parametrize("change, word", [(dict(ppo_epochs=2), "ppo_epochs 1"),
                                          (dict(clip_mode="truncated_is"), "truncated_is"),
                                          (dict(estimator="exact"), "estimator must be one of")])
def test_config_refuses_what_the_expected_estimator_cannot_do(world, tmp_path, change, word):
    with pytest.raises(ListopdError, match=word):
        opd_config(world, tmp_path / "run", **{"estimator": "expected", **change})


def test_trainer_runs_with_the_expected_estimator(world, tmp_path):
    cfg = opd_config(world, tmp_path / "run", estimator="expected", steps=2, reward_scale=1.5, lr=1e-3)
    summary = run_opd(cfg, quiet=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and summary["steps"] == 2
    assert all(r["grad_norm"] > 0 and r["entropy"] > 0 and r["teacher_kl_k1"] == r["teacher_kl_k1"] for r in records)
