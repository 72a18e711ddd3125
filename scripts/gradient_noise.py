"""How noisy is the ListOPD gradient? Cosine similarity between the gradients of independent batches, for
the sampled-token estimator (listopd_loss) and the expected one (listopd_expected_loss), on the same rollouts.

    .venv/bin/python scripts/gradient_noise.py --student runs/exp/warm200 --teacher runs/exp/teacher400 \\
        --tasks runs/exp/data/train.jsonl [--batches 4 --batch-size 16 --reward-scale 1 --clip-mode none]

Two estimators of one expected gradient: if the gradients of two batches point in unrelated directions
(cosine near 0 or negative), an optimiser step follows the noise rather than the objective.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from listopd.core.loss import listopd_expected_loss, listopd_loss
from listopd.train.models import load_model, load_tokenizer
from listopd.train.rollout import completion_logprob_table, sample
from listopd.task.tasks import read_tasks
from listopd.task.prompts import encode_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reward-scale", type=float, default=1.0)
    ap.add_argument("--clip-strength", type=float, default=5.0)
    ap.add_argument("--clip-mode", default="none")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    tok = load_tokenizer(args.student)
    student, teacher = load_model(args.student), load_model(args.teacher)
    tasks = read_tasks(args.tasks)
    generator = torch.Generator().manual_seed(args.seed)
    loss_args = dict(reward_scale=args.reward_scale, clip_strength=args.clip_strength, clip_mode=args.clip_mode)

    def gradient(loss) -> torch.Tensor:
        student.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])

    sampled, expected = [], []
    for b in range(args.batches):
        batch = tasks[b * args.batch_size:(b + 1) * args.batch_size]
        roll = sample(student, [encode_prompt(t, tok) for t in batch], max_new_tokens=64, eos_id=tok.eos_token_id,
                      pad_id=tok.pad_token_id, generator=generator).rows(slice(None))
        tokens, mask = roll.completion_ids, roll.completion_mask
        with torch.no_grad():
            teacher_table = completion_logprob_table(teacher, roll)
            base_table = completion_logprob_table(student, roll)  # the warm start is the base at step 0
        student.train()
        table = completion_logprob_table(student, roll)
        pick = lambda x: x.gather(-1, tokens[..., None]).squeeze(-1)  # noqa: E731
        lp = pick(table)
        sampled.append(gradient(listopd_loss(lp, lp.detach(), pick(teacher_table), pick(base_table), mask,
                                             **loss_args).loss))
        table = completion_logprob_table(student, roll)
        expected.append(gradient(listopd_expected_loss(table, teacher_table, base_table, tokens, mask,
                                                       **loss_args).loss))

    def cos(a, b):
        return round(float(a @ b / (a.norm() * b.norm())), 3)

    pairs = list(itertools.combinations(range(args.batches), 2))
    print("cosine between the gradients of independent batches:")
    print("  sampled-token estimator:", [cos(sampled[i], sampled[j]) for i, j in pairs])
    print("  expected estimator:     ", [cos(expected[i], expected[j]) for i, j in pairs])
    print("sampled vs expected on the same batch:", [cos(s, e) for s, e in zip(sampled, expected)])


if __name__ == "__main__":
    main()
