"""Does a teacher rank, or only format? Two teacher-forced diagnostics of an SFT'd model on a task file:

  - the loss of each part of the reference output: the JSON structure, the first id, ids 2..K−1, the last id
    (an id-blind model sits at log K on the first id; the last one is forced by the permutation);
  - NDCG@1 of the first id, read as the argmax over the K id tokens right after '{"ranking": ["' (what greedy
    decoding emits there), with a bootstrap 95% interval, and how many distinct first ids the model picks.

    .venv/bin/python scripts/target_loss_parts.py MODEL_DIR TASKS.jsonl [N]

Needs single-token candidate ids (the synthetic letters). Exploratory (issue 15, the testbed question).
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import torch

from listopd.task.metrics import ndcg_at_k
from listopd.task.prompts import render_prompt
from listopd.task.tasks import read_tasks
from listopd.train.models import load_model, load_tokenizer
from listopd.train.sft import encode_example


def main(model_dir: str, tasks_file: str, n: int = 300) -> dict:
    torch.set_num_threads(1)
    model, tok = load_model(model_dir).eval(), load_tokenizer(model_dir)
    tasks = read_tasks(tasks_file)[:n]
    k = len(tasks[0].candidates)
    letters = [tok.encode(c, add_special_tokens=False) for c in tasks[0].candidate_ids]
    assert all(len(t) == 1 for t in letters), "candidate ids must be single tokens"
    letter_ids = [t[0] for t in letters]
    parts = {"structure": [], "first_id": [], "middle_ids": [], "last_id": []}
    firsts, ndcg = [], []
    with torch.no_grad():
        for task in tasks:
            x, y = encode_example(task, tok)
            lp = torch.log_softmax(model(input_ids=torch.tensor([x])).logits[0, :-1].float(), -1)
            seen = 0
            for i in range(len(x) - 1):
                target = y[i + 1]
                if target == -100:
                    continue
                if target in letter_ids:
                    seen += 1
                    part = "first_id" if seen == 1 else "last_id" if seen == k else "middle_ids"
                else:
                    part = "structure"
                parts[part].append(-float(lp[i, target]))
            prefix = tok.encode(render_prompt(task, tok) + '{"ranking": ["', add_special_tokens=False)
            first = task.candidate_ids[int(model(input_ids=torch.tensor([prefix])).logits[0, -1, letter_ids].argmax())]
            firsts.append(first)
            ndcg.append(ndcg_at_k([first], task.relevance, 1))
    r = np.array(ndcg)
    boot = np.random.default_rng(0).choice(r, (1000, len(r))).mean(1)
    return {"model": model_dir, "tasks": len(tasks), "loss": {p: round(float(np.mean(v)), 3) for p, v in parts.items()},
            "uniform_first_id_loss": round(math.log(k), 3), "first_id_ndcg@1": round(float(r.mean()), 3),
            "first_id_ndcg@1_ci": [round(float(np.quantile(boot, q)), 3) for q in (0.025, 0.975)],
            "distinct_first_ids": len(set(firsts))}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 300), indent=1))
