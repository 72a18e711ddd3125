"""NDCG@1 of a word-overlap baseline vs a random order on task files (the learnability check of the
synthetic data, and of the real review-item tasks: can the relevant item be read off the text at all?).

    python scripts/synth_baseline.py DATA/train.jsonl DATA/validation.jsonl ...
    python scripts/synth_baseline.py --whole-context runs/real_pair/data/validation.jsonl

By default the context's first line is skipped (the synthetic contexts' header, "Purchase history (oldest first):");
--whole-context scores every line (the review-item contexts' first line is the review's title)."""

import argparse
import re
from collections import Counter

from listopd.task.metrics import ndcg_at_k
from listopd.task.tasks import read_tasks


def words(text):
    return [w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2]


ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("files", nargs="+")
ap.add_argument("--whole-context", action="store_true", help="score the context's first line too")
args = ap.parse_args()
tasks = [t for path in args.files for t in read_tasks(path)]
baseline, random_ = [], []
for t in tasks:
    lines = t.context.splitlines()[0 if args.whole_context else 1:]
    history = Counter(w for line in lines for w in words(line))
    score = {c.id: sum(history[w] for w in words(c.text)) for c in t.candidates}
    top = max(t.candidate_ids, key=lambda cid: score[cid])  # ties: first in candidate order
    baseline.append(ndcg_at_k([top], t.relevance, 1))
    random_.append(sum(ndcg_at_k([cid], t.relevance, 1) for cid in t.candidate_ids) / t.k)
print(f"{len(tasks)} tasks: word-overlap NDCG@1 {sum(baseline) / len(tasks):.3f}, "
      f"random order {sum(random_) / len(tasks):.3f}")
