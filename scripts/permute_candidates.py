"""Each task in several candidate orders: copy i shuffles the candidates and re-letters them in their new order
(relevance moves with its item), so the same review asks for a different letter in each copy. Copy 0 is the
task as it was. For SFT probes of whether a model learns to bind a match to the id in front of it (issue 17)
rather than memorise a letter per review.

    python scripts/permute_candidates.py runs/real_pair/data/train.jsonl runs/real_pair_probe/train_x4.jsonl --copies 4
"""

from __future__ import annotations

import argparse
import random

from listopd.task.tasks import Candidate, Task, read_tasks, write_tasks


def permuted(task: Task, rng: random.Random, task_id: str) -> Task:
    """The task as `task_id`, its candidates in a random order, ids re-assigned in the new order (the old ids'
    sequence)."""
    order = list(task.candidates)
    rng.shuffle(order)
    new_ids = dict(zip((c.id for c in order), task.candidate_ids))  # old id -> the id its new slot carries
    return Task(id=task_id, context=task.context, split=task.split, meta=task.meta,
                candidates=tuple(Candidate(new_ids[c.id], c.text) for c in order),
                relevance={new_ids[old]: rel for old, rel in task.relevance.items()})


def copies(tasks: list[Task], n: int, seed: int = 0) -> list[Task]:
    rng = random.Random(seed)
    return list(tasks) + [permuted(t, rng, f"{t.id}~perm{i}") for i in range(1, n) for t in tasks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks")
    ap.add_argument("out")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tasks = copies(read_tasks(args.tasks), args.copies, args.seed)
    write_tasks(args.out, tasks)
    print(f"wrote {len(tasks)} tasks to {args.out}")


if __name__ == "__main__":
    main()
