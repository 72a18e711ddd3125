"""The ListOPD step's logged numbers: the loss's statistics summed over micro-batches, then reduced over all
processes, so that the record (and the cliff guard that reads it) describes the global batch, the same on
every rank (a rank-local guard could stop one rank and not the others)."""

from __future__ import annotations

import math

from listopd.train.distributed import reduce_numbers


def accumulate(sums: dict, stats: dict) -> None:
    """Add one micro-batch's loss statistics: token-weighted sums (`tokens` itself as a count), running
    min/max for the advantage's extremes."""
    weight = stats["tokens"]
    for k, v in stats.items():
        if k == "adv_min":
            sums[k] = min(sums.get(k, math.inf), v)
        elif k == "adv_max":
            sums[k] = max(sums.get(k, -math.inf), v)
        else:
            sums[k] = sums.get(k, 0.0) + (v if k == "tokens" else v * weight)


def step_record(accelerator, step: int, *, stats_sum: dict, entropy_sum: float, parsed: list[bool],
                rollout, lr: float, grad_norm: float, elapsed_s: float) -> dict:
    """The metrics.jsonl record of one step: token-weighted means over the global batch (adv_std: the mean
    of per-micro-batch stds), completion lengths, EOS/truncation and rollout parse rates."""
    lengths = rollout.completion_mask.sum(1)
    sum_keys = sorted(k for k in stats_sum if k not in ("adv_min", "adv_max"))
    sums = reduce_numbers(accelerator, [stats_sum[k] for k in sum_keys] + [
        entropy_sum, sum(parsed), len(parsed), float(lengths.sum()), float(rollout.ended.sum())])
    maxes = reduce_numbers(accelerator, [stats_sum.get("adv_max", -math.inf), -stats_sum.get("adv_min", math.inf),
                                         float(lengths.max())], reduction="max")
    stats_sum = {**dict(zip(sum_keys, sums)), "adv_max": maxes[0], "adv_min": -maxes[1]}
    entropy_sum, n_parsed, n_rows, length_sum, n_ended = sums[len(sum_keys):]
    tokens = max(stats_sum.get("tokens", 0.0), 1.0)
    return {"step": step, "lr": lr, "grad_norm": grad_norm,
            **{k: (v if k in ("adv_min", "adv_max") else v / tokens)
               for k, v in stats_sum.items() if k != "tokens"},
            "entropy": entropy_sum / tokens, "completion_len_mean": length_sum / n_rows,
            "completion_len_max": maxes[2], "eos_rate": n_ended / n_rows,
            "truncated_rate": 1.0 - n_ended / n_rows,
            "rollout_parse_rate": n_parsed / n_rows, "elapsed_s": elapsed_s}
