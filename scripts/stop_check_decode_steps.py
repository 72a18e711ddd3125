"""How many decode steps the SFT's sampled stop check (`stop_at_sampled_parse`) runs per batch, against how many it
would run if each batch also stopped once every row had either ended or reached a prefix no valid output can
follow (the contract's automaton) — the saving such an early stop could buy, measured before building it.

    .venv/bin/python scripts/stop_check_decode_steps.py runs/demo runs/demo/warm/final [MODEL ...]

Uses the check's own draws: the first `--tasks` validation tasks in batches of 16, one sample each at T = 1 from
the evaluation seed, up to 64 new tokens, one thread.
"""

from __future__ import annotations

import argparse
import time

import torch

from listopd.task.contract import RankingContract
from listopd.task.tasks import read_tasks
from listopd.train.evaluation import EVAL_SEED, prompt_batches
from listopd.train.models import load_model, load_tokenizer
from listopd.train.rollout import sample


def stop_step(ids: list[int], contract: RankingContract, tokenizer) -> int:
    """The decode step after which this row can no longer matter: its EOS, or its first non-viable prefix
    (a trailing U+FFFD, an unfinished UTF-8 character, is left out before the check), or its last token."""
    for n in range(1, len(ids) + 1):
        if ids[n - 1] == tokenizer.eos_token_id:
            return n
        text = tokenizer.decode(ids[:n], skip_special_tokens=True).rstrip("\ufffd")
        if not contract.is_viable_prefix(text):
            return n
    return len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", help="a demo folder (its tokenizer/ and data/validation.jsonl)")
    parser.add_argument("models", nargs="+", help="model folders to check")
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(f"{args.demo}/tokenizer")
    tasks = read_tasks(f"{args.demo}/data/validation.jsonl")[:args.tasks]
    for folder in args.models:
        model = load_model(folder)
        generator = torch.Generator().manual_seed(EVAL_SEED)
        t0, ran, could = time.time(), [], []
        for rows, prompts in prompt_batches(tasks, tokenizer, 16):
            rollout = sample(model, prompts, max_new_tokens=64, eos_id=tokenizer.eos_token_id,
                             pad_id=tokenizer.pad_token_id, generator=generator)
            ran.append(rollout.completion_ids.shape[1])
            could.append(max(stop_step(row.tolist(), RankingContract(tasks[i].candidate_ids), tokenizer)
                             for i, row in zip(rows, rollout.completion_ids)))
        print(f"{folder}: {time.time() - t0:.1f} s; decode steps per batch {ran}, with the early stop {could}")


if __name__ == "__main__":
    main()
