"""Prompt KV caches for the frozen scorers (teacher and base): each training prompt's keys and values are
computed once and reused every time the prompt comes round again, so that scoring a rollout runs the frozen
model over the completion tokens only.

A ListOPD step scores every rollout under the teacher (and the base, λ ≠ 1) teacher-forced over prompt and
completion; the prompt is most of those tokens (~290 of ~330 on the synthetic task) and never changes, and a
frozen model's keys and values for it never change either. On pair E's step (batch 16, one thread) the
teacher's log-prob tables took 1.2 s with the whole sequence and 0.22–0.27 s from the cache.

Exactness: each prompt's keys and values are computed alone (a batch of one), whether it is new or cached, so a
row's scores do not depend on which other rows share its batch or on what the cache held — a resumed run, which
starts with an empty cache, scores exactly as the uninterrupted one. Against the whole-sequence forward the
log-probs differ by float rounding (≤ 2e-5 on the tiny presets, fp32: tests/test_prompt_cache.py).

Storage: on the CPU (moved to the model's device per batch), under a byte budget per model; prompts past the
budget are computed the same way and not kept. Only models whose layers all use full attention are cached
(sliding windows and linear attention keep the whole-sequence forward).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from listopd.train.rollout import Rollout, completion_logits, full_attention_only, position_ids


def cacheable(model) -> bool:
    """The models whose prompts are cached: those whose layers all use full attention."""
    return full_attention_only(model)


def prompt_cache(model, budget_mb: int) -> "PromptCache | None":
    """A new prompt cache for `model` (None: no model, budget 0, or a model the cache does not support)."""
    if model is None or not budget_mb or not cacheable(model):
        return None
    return PromptCache(model, budget_mb)


class PromptCache:
    """Keys and values of prompt[:-1] per prompt (the last prompt token is fed with the completion, so its
    logits — which predict the first completion token — come out of the same forward)."""

    def __init__(self, model, budget_mb: int):
        self.model, self.budget = model, budget_mb * (1 << 20)
        self.store: dict[bytes, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.bytes = self.hits = self.misses = 0

    @torch.no_grad()
    def _prompt_kv(self, prompt: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = self.model(input_ids=prompt[None, :-1], use_cache=True, logits_to_keep=1)
        return [(layer.keys[0], layer.values[0]) for layer in out.cache.layers]  # [heads, len, dim] each

    def _lookup(self, prompt: torch.Tensor):
        key = prompt.cpu().numpy().tobytes()
        kv = self.store.get(key)
        if kv is not None:
            self.hits += 1
            return kv
        self.misses += 1
        kv = self._prompt_kv(prompt)
        size = sum(k.nbytes + v.nbytes for k, v in kv)
        if self.bytes + size <= self.budget:
            kv = [(k.cpu().clone(), v.cpu().clone()) for k, v in kv]
            self.store[key] = kv
            self.bytes += size
        return kv

    def past(self, rollout: Rollout) -> Cache:
        """A batch cache over the rollout's left-padded prompts minus their last token (zeros under the pads,
        which the attention mask hides)."""
        p, mask = rollout.prompt_len, rollout.attention_mask
        rows = [self._lookup(rollout.input_ids[i, :p][mask[i, :p].bool()]) for i in range(len(mask))]
        device = rollout.input_ids.device
        layers = []
        for li in range(len(rows[0])):
            k0 = rows[0][li][0]
            keys = k0.new_zeros((len(rows), k0.shape[0], p - 1, k0.shape[-1]), device=device)
            values = torch.zeros_like(keys)
            for i, kv in enumerate(rows):
                n = kv[li][0].shape[1]
                keys[i, :, p - 1 - n:] = kv[li][0]
                values[i, :, p - 1 - n:] = kv[li][1]
            layer = DynamicLayer()
            layer.update(keys, values)
            layers.append(layer)
        return Cache(layers=layers)

    def completion_logits(self, rollout: Rollout) -> torch.Tensor:
        """What rollout.completion_logits returns, [B, T, V] float, from the cached prompts: the forward
        runs over the last prompt token and the completion tokens but the last."""
        p = rollout.prompt_len
        ids, mask = rollout.input_ids, rollout.attention_mask
        if int(mask[:, :p].sum(1).min()) < 2:  # a one-token prompt has nothing to cache
            return completion_logits(self.model, rollout)
        out = self.model(input_ids=ids[:, p - 1:-1], attention_mask=mask[:, :-1],
                         position_ids=position_ids(mask)[:, p - 1:-1], cache=self.past(rollout), use_cache=False)
        return out.logits.float()

    def stats(self) -> dict:
        return {"prompts": len(self.store), "mib": round(self.bytes / (1 << 20), 1), "hits": self.hits,
                "misses": self.misses}
