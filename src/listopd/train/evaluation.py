"""Evaluation by generation: decode a model's outputs on tasks (greedy or one seeded sample each) and score them
with listopd.task.metrics."""

from __future__ import annotations

import torch

from listopd.task.metrics import score
from listopd.task.prompts import encode_prompt, refuse_long_prompts
from listopd.train.models import context_length
from listopd.train.rollout import sample


def check_prompts_fit(models, tokenizer, tasks, *, source: str, room: int) -> list[list[int]]:
    """Refuse (InputError naming the task) any task whose prompt plus `room` new tokens exceeds the smallest
    context of `models`; returns the encoded prompts."""
    encoded = [encode_prompt(t, tokenizer) for t in tasks]
    limits = [n for n in (context_length(m) for m in models if m is not None) if n is not None]
    refuse_long_prompts(tasks, [len(x) for x in encoded], min(limits) if limits else None, source=source, room=room)
    return encoded


def decode_completions(tokenizer, rollout) -> list[str]:
    texts = []
    for ids, mask in zip(rollout.completion_ids, rollout.completion_mask):
        texts.append(tokenizer.decode(ids[mask > 0].tolist(), skip_special_tokens=True))
    return texts


@torch.no_grad()
def prompt_batches(tasks, tokenizer, batch_size: int):
    """Yield (row indices into `tasks`, their encoded prompts) in batches of similar prompt length, so that
    left padding stays short."""
    encoded = [encode_prompt(t, tokenizer) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        yield rows, [encoded[i] for i in rows]


def generate_outputs(model, tokenizer, tasks, *, max_new_tokens: int, batch_size: int = 16,
                     greedy: bool = True, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> dict[str, str]:
    """Task id -> decoded completion (greedy by default), in batches sorted by prompt length."""
    outputs = {}
    for rows, prompts in prompt_batches(tasks, tokenizer, batch_size):
        rollout = sample(model, prompts, max_new_tokens=max_new_tokens,
                         eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, greedy=greedy,
                         generator=generator, temperature=temperature)
        for i, text in zip(rows, decode_completions(tokenizer, rollout)):
            outputs[tasks[i].id] = text
    return outputs


EVAL_SEED = 20260101  # sampled evaluations draw from this seed: the same draws at every evaluation of every run


def evaluation_outputs(model, tokenizer, tasks, *, max_new_tokens: int, batch_size: int = 16,
                       temperature: float = 0.0) -> dict[str, str]:
    """Task id -> the output `evaluate` scores. temperature 0: greedy. temperature > 0: one sample per task at
    that temperature from a generator seeded with EVAL_SEED, so two evaluations differ only through the model
    (the same draws at the same batch_size)."""
    sampled = temperature > 0
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(EVAL_SEED) if sampled else None
    return generate_outputs(model, tokenizer, tasks, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            greedy=not sampled, generator=generator, temperature=temperature if sampled else 1.0)


def evaluate(model, tokenizer, tasks, *, max_new_tokens: int, batch_size: int = 16, n_boot: int = 200,
             temperature: float = 0.0) -> dict:
    """Outputs on `tasks` (`evaluation_outputs`), scored by listopd.task.metrics.score (strict parse, NDCG
    parsed/strict, …). Sampling measures the distribution that on-policy training shapes; greedy decoding only
    its argmax (a warm start can parse 100% greedily and 44% of the time when sampled)."""
    outputs = evaluation_outputs(model, tokenizer, tasks, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 temperature=temperature)
    return score(tasks, outputs, n_boot=n_boot)


def headline(metrics: dict) -> dict:
    """The few validation numbers logged every evaluation."""
    return {"val_strict_parse_rate": metrics["strict_parse_rate"],
            "val_ndcg@1_parsed": metrics["ndcg@1_parsed"],
            "val_ndcg@1_strict": metrics["ndcg@1_strict"]}
