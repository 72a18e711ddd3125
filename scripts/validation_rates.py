"""The trainer's own validation measurement of models before a sweep: strict parse rate (with its bootstrap
interval) and NDCG@1 parsed, one sample per task at temperature 1 from the fixed evaluation seed, on the first
N validation tasks — the numbers a pre-registration locks as the warm start's and the teacher's rates — and where the sampled
outputs break the contract (calibrate's failure roles, counted on these draws).

    python scripts/validation_rates.py runs/round2/pair/warm/final runs/round2/pair/teacher/final \
        --tasks runs/round2/pair/data/validation.jsonl --n 64 --out runs/round2/pair/validation_rates.json
"""

from __future__ import annotations

import argparse
import json

import torch

from collections import Counter

from listopd.experiment.calibrate import failure_role
from listopd.task.contract import RankingContract
from listopd.task.metrics import score
from listopd.task.tasks import read_tasks
from listopd.train.evaluation import evaluate, evaluation_outputs
from listopd.train.models import load_model, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model folders")
    ap.add_argument("--tasks", required=True, help="validation task file")
    ap.add_argument("--n", type=int, default=64, help="first N tasks (the sweep's eval_tasks)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = read_tasks(args.tasks)[:args.n]
    rows = {}
    for folder in args.models:
        model, tok = load_model(folder), load_tokenizer(folder)
        # evaluate(temperature=1)'s own draws, kept to see where they fail
        outputs = evaluation_outputs(model, tok, tasks, max_new_tokens=args.max_new_tokens, temperature=1.0)
        sampled = score(tasks, outputs, n_boot=200)
        failures = Counter(failure_role(RankingContract.for_task(t), outputs[t.id]) for t in tasks)
        greedy = evaluate(model, tok, tasks, max_new_tokens=args.max_new_tokens)
        rows[folder] = {"sampled_strict_parse_rate": sampled["strict_parse_rate"],
                        "sampled_strict_parse_rate_ci": sampled.get("strict_parse_rate_ci"),
                        "sampled_ndcg@1_parsed": sampled["ndcg@1_parsed"],
                        "sampled_failure_roles": dict(failures.most_common()),
                        "greedy_strict_parse_rate": greedy["strict_parse_rate"],
                        "greedy_ndcg@1_parsed": greedy["ndcg@1_parsed"]}
        print(folder, json.dumps(rows[folder]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"tasks": args.tasks, "n": len(tasks), "decoding": "temperature 1, the fixed evaluation seed; "
                       "and greedy", "models": rows}, f, indent=1)


if __name__ == "__main__":
    main()
