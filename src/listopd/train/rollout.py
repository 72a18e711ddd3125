"""Rollouts and sequence log-probs: KV-cache sampling from a causal LM, and teacher-forced scoring of the
sampled tokens under any model — only the [batch, completion] log-probs of the sampled tokens are kept.

Layout of a batch: prompts are left-padded to a common length P, completions right-padded to T:

    input_ids      [B, P + T]   pad … pad  prompt tokens | completion tokens, pad after EOS
    attention_mask [B, P + T]   0 on pads
    completion_mask[B, T]       1 on generated tokens (including the EOS that ends a completion)

Position ids count only real tokens (cumsum of the mask − 1), so a left-padded prompt sees the same
positions as an unpadded one. Scoring a completion token y_t uses the logits at the position before it:
the logits at index P−1+t predict completion token t.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [B, P+T]
    attention_mask: torch.Tensor  # [B, P+T]
    completion_mask: torch.Tensor  # [B, T] float
    sampler_logprobs: torch.Tensor  # [B, T] log-prob of each sampled token under the sampling distribution
    prompt_len: int  # P
    ended: torch.Tensor  # [B] bool: the completion ended with EOS (not truncated by max_new_tokens)

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len:]

    def rows(self, index) -> "Rollout":
        """A micro-batch (rows `index`), trimmed to its longest completion."""
        cm = self.completion_mask[index]
        t = int(cm.sum(1).max().item()) if cm.numel() else 0
        t = max(t, 1)
        end = self.prompt_len + t
        return Rollout(self.input_ids[index, :end], self.attention_mask[index, :end], cm[:, :t],
                       self.sampler_logprobs[index, :t], self.prompt_len, self.ended[index])


def micro_batches(rollout: Rollout, size: int) -> list[Rollout]:
    """The rollout split into micro-batches of `size` rows, each trimmed to its own longest completion."""
    return [rollout.rows(slice(i, i + size)) for i in range(0, len(rollout.completion_mask), size)]


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer that returns, like transformers' DynamicLayer, the keys and values of every position
    so far, from storage allocated once for `max_len` positions and written in place: no copy of the whole
    cache per generated token, and attention over the filled positions only (a static cache attends over all
    `max_len`). Decoding 64 tokens for 8 prompts of ~300 tokens took 12–16% less CPU time than with the
    default cache (tiny presets, fp32; 4–7% under bf16 autocast)."""

    def __init__(self, max_len: int):
        super().__init__()
        self.max_len, self.length = max_len, 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            b, h = key_states.shape[:2]
            self.key_store = key_states.new_empty((b, h, self.max_len, key_states.shape[-1]))
            self.value_store = value_states.new_empty((b, h, self.max_len, value_states.shape[-1]))
        end = self.length + key_states.shape[-2]
        self.key_store[:, :, self.length:end] = key_states
        self.value_store[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.key_store[:, :, :end], self.value_store[:, :, :end]
        return self.keys, self.values


def full_attention_only(model) -> bool:
    """A model with a config whose layers all use full attention (not sliding-window or linear attention)."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    text = config.get_text_config(decoder=True)
    return all(kind == "full_attention" for kind in getattr(text, "layer_types", None) or ())


def preallocated_cache(model, max_len: int) -> Cache | None:
    """A cache of PreallocatedLayer for a model whose layers all use full attention; None (the model's own
    cache) for sliding-window or linear-attention layers, or a wrapper without a config."""
    if not full_attention_only(model):
        return None
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[PreallocatedLayer(max_len) for _ in range(layers)])


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def warn_if_truncated_sampling(temperature: float, top_p: float, top_k: int) -> None:
    """The sampled-token OPD estimator assumes samples from the student itself (T=1, top-p 1, no top-k)."""
    if temperature != 1.0 or top_p < 1.0 or top_k > 0:
        warnings.warn(
            f"sampling with temperature={temperature}, top_p={top_p}, top_k={top_k}: rollouts no longer "
            "come from the student's own distribution, so the sampled-token OPD gradient is biased "
            "(use clip_mode=truncated_is to correct with the sampler's log-probs)", stacklevel=2)


def _processed_logprobs(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Log-probs of the sampling distribution (temperature, then top-k, then top-p), float32."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_lp, order = torch.sort(logp, dim=-1, descending=True)
        cum = sorted_lp.exp().cumsum(-1)
        drop_sorted = (cum - sorted_lp.exp()) >= top_p  # keep the smallest prefix reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logp = torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)
    return logp


@torch.no_grad()
def sample(model, prompts: list[list[int]], *, max_new_tokens: int, eos_id: int, pad_id: int,
           generator: torch.Generator | None = None, greedy: bool = False, temperature: float = 1.0,
           top_p: float = 1.0, top_k: int = 0, logits_hook=None) -> Rollout:
    """Sample completions with a KV cache (one forward over the prompts, then one token per step).

    `greedy=True` takes the argmax (for evaluation). Rows that emitted EOS keep receiving PAD and are
    masked out. The model is put in eval mode for the call and restored afterwards.

    `logits_hook(previous_tokens, logits) -> logits`, when given, sees the [B, V] next-token logits before
    the argmax or the sampling (previous_tokens: None at the first step, then the [B] tokens just chosen,
    PAD in finished rows); constrained decoding (listopd.experiment.constrained) masks disallowed tokens there.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    b, p = ids.shape
    # The attention mask and the KV cache are allocated once for the whole completion and written in place
    # (transformers' default cache copies all of itself at every step); the prompt pass keeps only the last
    # position's logits.
    full_mask = torch.zeros((b, p + max_new_tokens), dtype=mask.dtype, device=device)
    full_mask[:, :p] = mask
    cache = preallocated_cache(model, p + max_new_tokens)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), cache=cache, use_cache=True,
                logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1]
    next_pos = position_ids(mask)[:, -1:] + 1

    tokens, logps = [], []
    done = torch.zeros(b, dtype=torch.bool, device=device)
    ended = torch.zeros(b, dtype=torch.bool, device=device)
    prev = None
    for step in range(max_new_tokens):
        if logits_hook is not None:
            logits = logits_hook(prev, logits)
        if greedy:
            logp = torch.log_softmax(logits.float(), dim=-1)
            tok = logp.argmax(-1)
        else:
            logp = _processed_logprobs(logits, temperature, top_p, top_k)
            tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
        lp = logp.gather(1, tok[:, None]).squeeze(1)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens.append(tok)
        logps.append(torch.where(done, torch.zeros_like(lp), lp))
        prev = tok
        newly_ended = ~done & (tok == eos_id)
        ended |= newly_ended
        done |= newly_ended
        if bool(done.all()) or step == max_new_tokens - 1:  # (the last token needs no forward after it)
            break
        full_mask[:, p + step] = 1
        out = model(input_ids=tok[:, None], attention_mask=full_mask[:, :p + step + 1], position_ids=next_pos,
                    cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
        next_pos = next_pos + 1
    model.train(was_training)

    completion = torch.stack(tokens, dim=1)  # [B, T]
    # a token is part of the completion up to and including the first EOS
    is_eos = completion == eos_id
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    completion_mask = (~after_eos).float()
    input_ids = torch.cat([ids, completion], dim=1)
    attention_mask = torch.cat([mask[:, :p], completion_mask.long()], dim=1)
    return Rollout(input_ids, attention_mask, completion_mask, torch.stack(logps, 1) * completion_mask,
                   p, ended)


def completion_logits(model, rollout: Rollout) -> torch.Tensor:
    """Float logits [B, T, V] at the completion positions, teacher-forced in one forward pass that computes
    the logits of those positions only (`logits_to_keep`)."""
    t = rollout.completion_mask.shape[1]
    ids, mask = rollout.input_ids, rollout.attention_mask
    # logits at positions P−1 … P+T−2 predict completion tokens 0 … T−1
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids(mask)[:, :-1],
                use_cache=False, logits_to_keep=t)
    return out.logits[:, -t:].float()


def completion_logprobs(model, rollout: Rollout, *, with_entropy: bool = False, prompt_cache=None):
    """Log-probs [B, T] of the completion tokens under `model`, teacher-forced in one forward pass (over the
    completion only when a train.prompt_cache.PromptCache of this model is given).

    Only the logits of the completion positions are computed (`logits_to_keep`), the log-softmax is never
    materialised ([B, T, V] logits exist for this micro-batch only), and the gather is
    logit[y] − logsumexp(logits). With `with_entropy` also returns the per-token entropy (no grad).
    Gradients flow when the caller has them enabled.
    """
    logits = prompt_cache.completion_logits(rollout) if prompt_cache is not None else completion_logits(model, rollout)
    t = logits.shape[1]
    targets = rollout.input_ids[:, rollout.prompt_len:rollout.prompt_len + t]
    vocab = logits.shape[-1]
    if int(targets.max()) >= vocab:
        raise ValueError(f"token id {int(targets.max())} outside the model's {vocab} logits")
    lse = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, targets[..., None]).squeeze(-1) - lse
    lp = lp * rollout.completion_mask
    if not with_entropy:
        return lp
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = (lse - (probs * logits).sum(-1)) * rollout.completion_mask
    return lp, entropy


def completion_logprob_table(model, rollout: Rollout, *, prompt_cache=None) -> torch.Tensor:
    """Log-probs of every vocabulary entry at every completion position, [B, T, V] (the whole
    distribution, where `completion_logprobs` keeps only the sampled token's). Needed by the expected
    estimator of listopd.core.loss; gradients flow when the caller has them enabled. `prompt_cache` as in
    completion_logprobs."""
    logits = prompt_cache.completion_logits(rollout) if prompt_cache is not None else completion_logits(model, rollout)
    return torch.log_softmax(logits, dim=-1)
