"""The frozen scorers' prompt KV cache (train/prompt_cache.py) is a speed change: it scores what the
whole-sequence forward scores (to float rounding), the same bits whether a prompt was cached or new (so a
resumed run, which starts with an empty cache, scores as the uninterrupted one), within its byte budget."""

import torch

from listopd.task.prompts import encode_prompt
from listopd.train.models import load_frozen, load_model
from listopd.train.prompt_cache import PromptCache, cacheable
from listopd.train.rollout import completion_logprob_table, completion_logprobs, sample


def _prompts(world, n, offset=0):
    """n prompts of different lengths (different left padding per row)."""
    seen, prompts = set(), []
    for t in world.train_tasks[offset:]:
        ids = encode_prompt(t, world.tok)
        if len(ids) not in seen:
            seen.add(len(ids))
            prompts.append(ids)
        if len(prompts) == n:
            return prompts
    raise AssertionError("not enough distinct prompt lengths")


def _rollout(world, prompts, seed=0):
    student = load_model(world.eos_student)  # rows that stop early and rows that run to the limit
    return sample(student, prompts, max_new_tokens=12, eos_id=world.tok.eos_token_id,
                  pad_id=world.tok.pad_token_id, generator=torch.Generator().manual_seed(seed)).rows(slice(None))


def test_cached_scores_match_the_whole_sequence_forward(world):
    teacher = load_frozen(world.teacher)
    rollout = _rollout(world, _prompts(world, 4))
    assert len(set(rollout.completion_mask.sum(1).tolist())) > 1
    cache = PromptCache(teacher, budget_mb=64)
    with torch.no_grad():
        table = completion_logprob_table(teacher, rollout)
        cached = completion_logprob_table(teacher, rollout, prompt_cache=cache)
        lp = completion_logprobs(teacher, rollout)
        cached_lp = completion_logprobs(teacher, rollout, prompt_cache=cache)
    m = rollout.completion_mask.bool()
    torch.testing.assert_close(cached[m], table[m], atol=2e-5, rtol=0)
    torch.testing.assert_close(cached_lp, lp, atol=2e-5, rtol=0)
    assert cache.stats()["prompts"] == 4 and cache.misses == 4 and cache.hits == 4


def test_a_prompt_scores_the_same_bits_cached_or_new(world):
    """The resume case: a cold cache and one warmed by other batches give identical scores."""
    teacher = load_frozen(world.teacher)
    prompts = _prompts(world, 4)
    rollout = _rollout(world, prompts, seed=1)
    warm = PromptCache(teacher, budget_mb=64)
    with torch.no_grad():
        # warm the cache with the same prompts in other batches (other partners, other padding)
        completion_logprobs(teacher, _rollout(world, prompts[2:] + _prompts(world, 2, offset=5)), prompt_cache=warm)
        completion_logprobs(teacher, _rollout(world, prompts[:2]), prompt_cache=warm)
        hits_before = warm.hits
        from_warm = completion_logprob_table(teacher, rollout, prompt_cache=warm)
        from_cold = completion_logprob_table(teacher, rollout, prompt_cache=PromptCache(teacher, budget_mb=64))
    assert warm.hits - hits_before == 4
    assert torch.equal(from_warm, from_cold)


def test_prompts_past_the_budget_are_scored_but_not_kept(world):
    teacher = load_frozen(world.teacher)
    rollout = _rollout(world, _prompts(world, 3))
    kept = PromptCache(teacher, budget_mb=64)
    none_kept = PromptCache(teacher, budget_mb=0)
    with torch.no_grad():
        a = completion_logprobs(teacher, rollout, prompt_cache=kept)
        b = completion_logprobs(teacher, rollout, prompt_cache=none_kept)
    assert torch.equal(a, b)
    assert none_kept.stats() == {"prompts": 0, "mib": 0.0, "hits": 0, "misses": 3}
    assert kept.stats()["prompts"] == 3 and kept.bytes > 0


def test_only_full_attention_models_are_cached(world):
    teacher = load_frozen(world.teacher)
    assert cacheable(teacher)
    teacher.config.layer_types = ["sliding_attention"] + list(teacher.config.layer_types[1:])
    assert not cacheable(teacher)
    assert not cacheable(torch.nn.Linear(2, 2))  # no config: the whole-sequence forward
