"""Contract-aware extrapolation (issue 19 step 2): λ only on tokens that keep the contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_world import opd_config

from listopd.core.fixed_points import full_vocab_keep
from listopd.core.loss import listopd_expected_loss, listopd_loss
from listopd.task.contract import RankingContract
from listopd.task.prompts import target_text
from listopd.task.tasks import read_tasks


def _lps(*rows):
    return torch.log(torch.tensor([rows], dtype=torch.float64))


def test_breaking_tokens_get_the_plain_opd_advantage():
    lp_old, lp_t, lp_b = _lps(0.5, 0.1, 0.2), _lps(0.9, 0.05, 0.3), _lps(0.4, 0.01, 0.5)
    mask, lam = torch.ones(1, 3), 2.5
    kw = dict(reward_scale=lam, clip_mode="none")
    keep = torch.tensor([[True, False, True]])
    aware = listopd_loss(lp_old.clone(), lp_old, lp_t, lp_b, mask, keep=keep, **kw).advantages
    plain = listopd_loss(lp_old.clone(), lp_old, lp_t, lp_b, mask, **kw).advantages
    opd = listopd_loss(lp_old.clone(), lp_old, lp_t, lp_b, mask, reward_scale=1.0, clip_mode="none").advantages
    assert torch.equal(aware[0, [0, 2]], plain[0, [0, 2]]) and torch.equal(aware[0, 1], opd[0, 1])
    assert aware[0, 1] == pytest.approx(math.log(0.05 / 0.1))


def test_expected_estimator_takes_a_vocabulary_mask():
    torch.manual_seed(0)
    table = torch.log_softmax(torch.randn(1, 2, 5, dtype=torch.float64), -1).requires_grad_()
    teacher, base = (torch.log_softmax(torch.randn(1, 2, 5, dtype=torch.float64), -1) for _ in range(2))
    tokens, mask = torch.tensor([[1, 3]]), torch.ones(1, 2)
    keep = torch.ones(1, 2, 5, dtype=torch.bool)
    kw = dict(reward_scale=2.0, clip_mode="teacher_ratio", clip_strength=3.0)
    all_keep = listopd_expected_loss(table, teacher, base, tokens, mask, keep=keep, **kw).loss
    assert torch.allclose(all_keep, listopd_expected_loss(table, teacher, base, tokens, mask, **kw).loss)
    none_keep = listopd_expected_loss(table, teacher, base, tokens, mask, keep=~keep, **kw).loss
    lam_one = listopd_expected_loss(table, teacher, base, tokens, mask, reward_scale=1.0, clip_mode="teacher_ratio",
                                    clip_strength=3.0).loss
    assert torch.allclose(none_keep, lam_one)


def test_fixed_point_holds_breaking_tokens_at_the_teacher():
    """q(y) ∝ π_T^λ π_B^(1−λ) on keeping tokens, ∝ π_T on the others (one normaliser)."""
    pt, pb = np.array([0.90, 0.06, 0.04]), np.array([0.60, 0.01, 0.39])
    keep = np.array([True, False, False])
    lam = 3.0
    kept = pt[0] ** lam * pb[0] ** (1 - lam)
    expected = kept / (kept + pt[1] + pt[2])
    got = full_vocab_keep(np.log(pt), np.log(pb), keep, (1.0, lam), contract_aware=True)
    assert got == pytest.approx([0.90, expected])
    plain = full_vocab_keep(np.log(pt), np.log(pb), keep, (lam,))[0]
    assert plain < 0.9 < got[1]  # the breaking token the base dislikes most is what plain extrapolation boosts


def test_masks_follow_the_contract(world):
    from listopd.train.keeping import KeepingMasks

    tok = world.tok
    task = read_tasks(world.val)[0]
    contract = RankingContract.for_task(task)
    good = tok.encode(target_text(task), add_special_tokens=False) + [tok.eos_token_id]
    bad = tok.encode('{"ranking": ["' + task.candidate_ids[0] + '", "' + task.candidate_ids[0],
                     add_special_tokens=False)
    width = len(tok)
    n = max(len(good), len(bad))
    ids = torch.full((2, n), tok.pad_token_id)
    ids[0, :len(good)], ids[1, :len(bad)] = torch.tensor(good), torch.tensor(bad)
    live = torch.zeros(2, n)
    live[0, :len(good)], live[1, :len(bad)] = 1, 1
    masks = KeepingMasks(tok, width)
    sampled = masks([contract, contract], ids, live, full=False)
    assert sampled[0, :len(good)].all()
    assert not sampled[1, len(bad) - 1] and sampled[1, 0]  # the repeated id breaks it
    full = masks([contract, contract], ids, live, full=True)
    assert full.shape == (2, n, width)
    assert all(bool(full[0, j, good[j]]) for j in range(len(good)))
    end = full[0, len(good) - 1]  # after the closing brace: EOS (and trailing whitespace) keep it, nothing else
    assert end[tok.eos_token_id] and int(end.sum()) < 10


def test_contract_aware_at_lambda_one_is_plain_opd_bitwise(world, tmp_path):
    from safetensors.torch import load_file

    from listopd.train.opd import run_opd

    for estimator in ("sampled", "expected"):
        a = run_opd(opd_config(world, tmp_path / f"a{estimator}", steps=2, estimator=estimator), quiet=True)
        b = run_opd(opd_config(world, tmp_path / f"b{estimator}", steps=2, estimator=estimator,
                               contract_aware=True), quiet=True)
        assert a["steps"] == b["steps"] == 2
        wa = load_file(str(tmp_path / f"a{estimator}" / "final" / "model.safetensors"))
        wb = load_file(str(tmp_path / f"b{estimator}" / "final" / "model.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    run_opd(opd_config(world, tmp_path / "above", steps=2, reward_scale=3.0, contract_aware=True,
                       estimator="expected"), quiet=True)
