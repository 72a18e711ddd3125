"""listopd.train.rollout: KV-cache sampling and teacher-forced completion log-probs, on real tiny Qwen3 models.

The reference for every log-prob is a plain full forward pass of the model on one *unpadded*
prompt + completion sequence (default positions 0..L-1), log_softmax, gathered at the shifted position.
"""

import math
import warnings

import pytest
import torch

from listopd.train.models import load_model
from listopd.train.rollout import (Rollout, _processed_logprobs, completion_logprobs, left_pad, sample,
                             warn_if_truncated_sampling)
from listopd.task.prompts import encode_prompt


class Biased(torch.nn.Module):
    """A causal LM whose logits are `scale·logits + bias` (bias on EOS makes a random-init model stop at
    random places). Passes every keyword to the wrapped model, so both `sample` and `completion_logprobs`
    see the same distribution."""

    def __init__(self, inner, vocab: int, eos_id: int, eos_bias: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.inner = inner
        self.scale = scale
        bias = torch.zeros(vocab)
        bias[eos_id] = eos_bias
        self.register_buffer("bias", bias)

    def forward(self, **kw):
        out = self.inner(**kw)
        out.logits = out.logits * self.scale + self.bias
        return out


@pytest.fixture(scope="module")
def student(world):
    torch.set_num_threads(1)
    return load_model(world.student)


@pytest.fixture(scope="module")
def prompts(world):
    """Six real prompts of pairwise different lengths (so left padding differs per row)."""
    seen, out = set(), []
    for t in world.train_tasks:
        ids = encode_prompt(t, world.tok)
        if len(ids) not in seen:
            seen.add(len(ids))
            out.append(ids)
        if len(out) == 6:
            break
    assert len(set(map(len, out))) == 6
    return out


def reference_logprobs(model, prompt: list[int], completion: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies) of `completion` after `prompt` from one unpadded full forward pass."""
    seq = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    p = len(prompt)
    rows = torch.arange(p - 1, p - 1 + len(completion))
    lp = logp[rows, torch.tensor(completion)]
    ent = -(logp[rows].exp() * logp[rows]).sum(-1)
    return lp, ent


def hand_rollout(prompts, completions, pad_id, eos_id) -> Rollout:
    """The documented layout, built by hand: left-padded prompts, right-padded completions."""
    ids, pmask = left_pad(prompts, pad_id)
    t = max(len(c) for c in completions)
    comp = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    cmask = torch.zeros((len(prompts), t))
    for i, c in enumerate(completions):
        comp[i, :len(c)] = torch.tensor(c)
        cmask[i, :len(c)] = 1
    ended = torch.tensor([c[-1] == eos_id for c in completions])
    return Rollout(torch.cat([ids, comp], 1), torch.cat([pmask, cmask.long()], 1), cmask, torch.zeros_like(cmask),
                   ids.shape[1], ended)


# --------------------------------------------------------------------------------------------- scoring

def test_completion_logprobs_match_unpadded_full_forward(world, student, prompts):
    tok = world.tok
    eos, pad = tok.eos_token_id, tok.pad_token_id
    g = torch.Generator().manual_seed(0)
    rand = lambda n: torch.randint(3, len(tok), (n,), generator=g).tolist()  # noqa: E731
    completions = [rand(2) + [eos],   # EOS early, right padding after it
                   rand(6),           # truncated: no EOS, fills T
                   rand(5) + [eos]]   # EOS at the very last position
    ps = prompts[:3]
    assert len(set(map(len, ps))) == 3
    roll = hand_rollout(ps, completions, pad, eos)
    assert roll.completion_mask.shape == (3, 6)

    lp, ent = completion_logprobs(student, roll, with_entropy=True)
    assert lp.shape == (3, 6)
    for i, (p, c) in enumerate(zip(ps, completions)):
        ref_lp, ref_ent = reference_logprobs(student, p, c)
        torch.testing.assert_close(lp[i, :len(c)], ref_lp, atol=1e-5, rtol=0)
        torch.testing.assert_close(ent[i, :len(c)], ref_ent, atol=1e-5, rtol=0)
        assert torch.all(lp[i, len(c):] == 0) and torch.all(ent[i, len(c):] == 0)
        # the check has power: gathering one position off gives clearly different numbers
        off_by_one, _ = reference_logprobs(student, p[:-1], [p[-1]] + c[:-1])
        assert (off_by_one - ref_lp).abs().max() > 1e-2

    # gradients flow, and only into the masked completion tokens
    student.zero_grad(set_to_none=True)
    completion_logprobs(student, roll).sum().backward()
    assert student.model.embed_tokens.weight.grad is not None
    student.zero_grad(set_to_none=True)


def test_completion_logprobs_refuse_ids_outside_the_logits(world, student, prompts):
    roll = hand_rollout(prompts[:1], [[len(world.tok) + 5]], world.tok.pad_token_id, world.tok.eos_token_id)
    with pytest.raises((ValueError, IndexError)):
        completion_logprobs(student, roll)


# --------------------------------------------------------------------------------------------- sampling

def _mixed_rollout(model, prompts, tok, max_new_tokens=12):
    """A sampled rollout in which some rows end with EOS before the last step and some are truncated."""
    for seed in range(20):
        roll = sample(model, prompts, max_new_tokens=max_new_tokens, eos_id=tok.eos_token_id,
                      pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(seed))
        lengths = roll.completion_mask.sum(1)
        if roll.ended.any() and (~roll.ended).any() and bool((lengths[roll.ended] < roll.completion_mask.shape[1]).any()):
            return roll
    raise AssertionError("no seed gave a rollout with both early-EOS and truncated rows")


def test_sample_masks_eos_and_nothing_after(world, student, prompts):
    tok = world.tok
    eos, pad = tok.eos_token_id, tok.pad_token_id
    model = Biased(student, len(tok), eos, eos_bias=5.5)
    roll = _mixed_rollout(model, prompts, tok)
    comp, cm = roll.completion_ids, roll.completion_mask
    p = roll.prompt_len
    assert roll.input_ids.shape[1] == p + comp.shape[1]
    for i in range(len(prompts)):
        row = comp[i].tolist()
        if eos in row:
            first = row.index(eos)
            assert roll.ended[i]
            assert cm[i, :first + 1].tolist() == [1.0] * (first + 1)  # EOS itself is a completion token
            assert cm[i, first + 1:].sum() == 0  # nothing after it
            assert all(x == pad for x in row[first + 1:])  # PAD after EOS
        else:
            assert not roll.ended[i] and cm[i].sum() == comp.shape[1]
        # prompt: left padded; completion part of the attention mask is the completion mask
        assert roll.attention_mask[i, :p].sum() == len(prompts[i])
        assert roll.input_ids[i, p - len(prompts[i]):p].tolist() == prompts[i]
        assert torch.equal(roll.attention_mask[i, p:].float(), cm[i])
    assert torch.all(roll.sampler_logprobs[cm == 0] == 0)


def test_sampler_logprobs_agree_with_teacher_forcing(world, student, prompts):
    tok = world.tok
    model = Biased(student, len(tok), tok.eos_token_id, eos_bias=5.5)
    roll = _mixed_rollout(model, prompts, tok)
    with torch.no_grad():
        forced = completion_logprobs(model, roll)
    torch.testing.assert_close(roll.sampler_logprobs, forced, atol=1e-4, rtol=0)
    # and both agree with the unpadded reference, row by row
    for i in range(len(prompts)):
        n = int(roll.completion_mask[i].sum())
        ref, _ = reference_logprobs(model, prompts[i], roll.completion_ids[i, :n].tolist())
        torch.testing.assert_close(forced[i, :n], ref, atol=1e-5, rtol=0)
    # trimming a micro-batch keeps the values
    sub = roll.rows(slice(0, 2))
    with torch.no_grad():
        torch.testing.assert_close(completion_logprobs(model, sub), forced[:2, :sub.completion_mask.shape[1]],
                                   atol=1e-5, rtol=0)


def test_sampler_logprobs_report_the_processed_distribution(world, student, prompts):
    """With temperature T the sampler reports log-probs of softmax(logits / T), not of the model."""
    tok = world.tok
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        roll = sample(student, prompts[:3], max_new_tokens=6, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                      generator=torch.Generator().manual_seed(1), temperature=0.5)
    with torch.no_grad():
        at_t = completion_logprobs(Biased(student, len(tok), tok.eos_token_id, scale=2.0), roll)
        plain = completion_logprobs(student, roll)
    torch.testing.assert_close(roll.sampler_logprobs, at_t, atol=1e-4, rtol=0)
    assert (roll.sampler_logprobs - plain).abs().max() > 1e-3


def test_greedy_is_deterministic_and_takes_the_argmax(world, student, prompts):
    tok = world.tok
    kw = dict(max_new_tokens=8, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, greedy=True)
    torch.manual_seed(0)
    a = sample(student, prompts, **kw)
    torch.manual_seed(1)
    b = sample(student, prompts, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.completion_mask, b.completion_mask)
    # each greedy token is the argmax of the unpadded full forward's next-token logits
    for i, p in enumerate(prompts[:2]):
        seq = p + a.completion_ids[i].tolist()
        with torch.no_grad():
            logits = student(input_ids=torch.tensor([seq])).logits[0]
        n = a.completion_ids.shape[1]
        assert logits[len(p) - 1:len(p) - 1 + n].argmax(-1).tolist() == a.completion_ids[i].tolist()
    # top_k = 1 sampling is greedy, with sampler log-prob log 1 = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k1 = sample(student, prompts, max_new_tokens=8, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                    generator=torch.Generator().manual_seed(3), top_k=1)
    assert torch.equal(k1.input_ids, a.input_ids)
    assert torch.all(k1.sampler_logprobs == 0)


def test_same_generator_seed_same_samples(world, student, prompts):
    tok = world.tok
    kw = dict(max_new_tokens=8, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    torch.manual_seed(0)
    a = sample(student, prompts, generator=torch.Generator().manual_seed(11), **kw)
    torch.manual_seed(99)  # the global RNG plays no part
    b = sample(student, prompts, generator=torch.Generator().manual_seed(11), **kw)
    c = sample(student, prompts, generator=torch.Generator().manual_seed(12), **kw)
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.sampler_logprobs, b.sampler_logprobs)
    assert not torch.equal(a.input_ids, c.input_ids)


def test_sample_restores_training_mode(world, student, prompts):
    tok = world.tok
    student.train()
    sample(student, prompts[:1], max_new_tokens=2, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
           generator=torch.Generator().manual_seed(0))
    assert student.training
    student.eval()
    sample(student, prompts[:1], max_new_tokens=2, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, greedy=True)
    assert not student.training


# --------------------------------------------------------------------------------------------- truncation

@pytest.mark.parametrize("kw", [dict(top_k=5), dict(top_p=0.9), dict(temperature=0.7), dict(temperature=1.3)])
def test_warn_if_truncated_sampling_warns(kw):
    args = dict(temperature=1.0, top_p=1.0, top_k=0) | kw
    with pytest.warns(UserWarning, match="biased"):
        warn_if_truncated_sampling(**args)


def test_warn_if_truncated_sampling_quiet_at_defaults():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_truncated_sampling(1.0, 1.0, 0)


def _check_distribution(logp: torch.Tensor, keep: list[int], ref_probs: torch.Tensor):
    probs = logp.exp()
    assert math.isclose(float(probs.sum()), 1.0, abs_tol=1e-6)
    dropped = [i for i in range(len(probs)) if i not in keep]
    assert torch.all(torch.isneginf(logp[dropped]))
    expected = ref_probs[keep] / ref_probs[keep].sum()
    torch.testing.assert_close(probs[keep], expected, atol=1e-6, rtol=0)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.tensor([0.05, 0.30, 0.05, 0.50, 0.10])  # sorted: 3 (.5), 1 (.3), 4 (.1), 0, 2
    logits = probs.log()
    _check_distribution(_processed_logprobs(logits, 1.0, 0.75, 0), [1, 3], probs)  # .5 + .3 ≥ .75
    _check_distribution(_processed_logprobs(logits, 1.0, 0.45, 0), [3], probs)  # the mode alone
    _check_distribution(_processed_logprobs(logits, 1.0, 0.85, 0), [1, 3, 4], probs)
    _check_distribution(_processed_logprobs(logits, 1.0, 1.0, 0), [0, 1, 2, 3, 4], probs)
    # batched: each row on its own
    both = _processed_logprobs(torch.stack([logits, logits.flip(0)]), 1.0, 0.75, 0)
    _check_distribution(both[0], [1, 3], probs)
    _check_distribution(both[1], [1, 3], probs.flip(0))


def test_top_k_and_temperature():
    probs = torch.tensor([0.05, 0.30, 0.05, 0.50, 0.10])
    logits = probs.log()
    _check_distribution(_processed_logprobs(logits, 1.0, 1.0, 2), [1, 3], probs)
    _check_distribution(_processed_logprobs(logits, 1.0, 1.0, 3), [1, 3, 4], probs)
    t = 0.5
    lp = _processed_logprobs(logits, t, 1.0, 0)
    torch.testing.assert_close(lp, torch.log_softmax(logits / t, -1))
    # temperature first, then top-k, then top-p on the renormalised top-k
    tempered = torch.softmax(logits / t, -1)  # top-3 renormalised: {3: .714, 1: .257, 4: .029}
    _check_distribution(_processed_logprobs(logits, t, 0.9, 3), [1, 3], tempered)
    _check_distribution(_processed_logprobs(logits, t, 1.0, 3), [1, 3, 4], tempered)


class Counting(torch.nn.Module):
    """Counts the forward passes of the wrapped model."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, **kw):
        self.calls += 1
        return self.inner(**kw)


def test_sample_runs_one_forward_per_token_and_none_after_the_last(world, student, prompts):
    tok = world.tok
    model = Counting(student)
    roll = sample(model, prompts, max_new_tokens=5, eos_id=-1, pad_id=tok.pad_token_id,
                  generator=torch.Generator().manual_seed(0))
    assert roll.completion_ids.shape[1] == 5
    assert model.calls == 5  # the prompt pass gives token 1, four cached passes tokens 2-5; token 5's logits unused
    # and the tokens are the ones a longer budget draws first
    longer = sample(student, prompts, max_new_tokens=8, eos_id=-1, pad_id=tok.pad_token_id,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(longer.completion_ids[:, :5], roll.completion_ids)
