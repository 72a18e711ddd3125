"""Sampling with listopd.train.rollout's preallocated KV cache gives what transformers' default cache gives
(the cache is a speed change only; benchmarks/opd_step.py)."""

import torch

from listopd.train.models import load_model
from listopd.train.rollout import PreallocatedLayer, sample
from listopd.task.prompts import encode_prompt


class NoConfig(torch.nn.Module):
    """The model behind a wrapper without `.config`: `sample` then uses the model's default cache."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, **kw):
        return self.inner(**kw)


def test_preallocated_cache_samples_what_the_default_cache_samples(world):
    torch.set_num_threads(1)
    model = load_model(world.eos_student)  # stops at varied lengths: rows with and without EOS
    seen, prompts = set(), []
    for t in world.train_tasks:
        ids = encode_prompt(t, world.tok)
        if len(ids) not in seen:  # different lengths: different left padding per row
            seen.add(len(ids))
            prompts.append(ids)
        if len(prompts) == 5:
            break
    kw = dict(max_new_tokens=10, eos_id=world.tok.eos_token_id, pad_id=world.tok.pad_token_id)
    calls = []
    original = PreallocatedLayer.update

    def counting(self, *a, **k):
        calls.append(self.max_len)
        return original(self, *a, **k)

    PreallocatedLayer.update = counting
    try:
        ours = sample(model, prompts, generator=torch.Generator().manual_seed(3), **kw)
    finally:
        PreallocatedLayer.update = original
    default = sample(NoConfig(model), prompts, generator=torch.Generator().manual_seed(3), **kw)
    assert calls and set(calls) == {max(map(len, prompts)) + 10}  # our cache was the one used
    assert len(set(ours.completion_mask.sum(1).tolist())) > 1
    assert torch.equal(ours.input_ids, default.input_ids)
    assert torch.equal(ours.completion_mask, default.completion_mask)
    torch.testing.assert_close(ours.sampler_logprobs, default.sampler_logprobs, atol=1e-5, rtol=0)
