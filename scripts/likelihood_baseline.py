"""Does an untuned model know which candidate a review is about, before any binding to id letters? Ranks each
task's candidates by pointwise mutual information under the model, teacher-forced and zero-shot:

    score(c) = log p(c's text | "<context>\\nThe review above is about: ") − log p(c's text | "The review above is about: ")

(the second term removes how likely the title is anyway). No tuning, no choice made on the data. Prints NDCG@1 with a
bootstrap 95% interval per file, beside chance. Exploratory (issue 17: the 135M teacher's SFT ranks at chance; is
the match missing from the model, or only the step from the match to a letter?).

    .venv/bin/python scripts/likelihood_baseline.py smollm2-135m runs/real_pair/data/validation.jsonl \\
        runs/real_pair/data/test.jsonl [--max-tasks N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from listopd.task.metrics import bootstrap_ci, ndcg_at_k
from listopd.task.tasks import read_tasks
from listopd.train.models import load_model, load_tokenizer

CUE = "The review above is about: "


def text_logprob(model, tok, prefix: str, text: str) -> float:
    """Σ log p(text's tokens | prefix), one forward."""
    p, t = tok.encode(prefix, add_special_tokens=False), tok.encode(" " + text, add_special_tokens=False)[:64]
    logits = model(input_ids=torch.tensor([p + t])).logits[0, len(p) - 1:-1].float()
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(t)[:, None]).sum())


def ndcg1(scores: list[float], task) -> float:
    """NDCG@1 of the task's candidate with the highest score."""
    return ndcg_at_k([task.candidates[int(np.argmax(scores))].id], task.relevance, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--max-tasks", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tok = load_model(args.model).eval(), load_tokenizer(args.model)
    with torch.no_grad():
        for path in args.files:
            tasks = read_tasks(path)[:args.max_tasks]
            pmi, cond = [], []
            for task in tasks:
                conditional = [text_logprob(model, tok, f"{task.context}\n{CUE}", c.text) for c in task.candidates]
                prior = [text_logprob(model, tok, CUE, c.text) for c in task.candidates]
                pmi.append(ndcg1([a - b for a, b in zip(conditional, prior)], task))
                cond.append(ndcg1(conditional, task))
            chance = np.mean([np.mean([ndcg_at_k([c], t.relevance, 1) for c in t.candidate_ids]) for t in tasks])
            for name, v in (("PMI", pmi), ("conditional log p alone", cond)):
                lo, hi = bootstrap_ci(np.array(v), n_boot=2000)
                print(f"{path}: {len(tasks)} tasks, {name} NDCG@1 {np.mean(v):.3f} [{lo:.3f}, {hi:.3f}] "
                      f"(chance {chance:.3f})")


if __name__ == "__main__":
    main()
