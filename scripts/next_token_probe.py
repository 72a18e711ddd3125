"""What several models put next after one output prefix: the top log-probabilities at the position after
PREFIX (teacher-forced on each task's prompt), per model and task, and the log-probability of each token named
with --token. Used to see where a ListOPD student's outputs leave the contract (issue 17: the λ = 1.678 student
skips "G" after "F" where its teacher is certain of "G").

    .venv/bin/python scripts/next_token_probe.py teacher=runs/real_pair/teacher/final \
        warm=runs/real_pair/warm/final opd=runs/real_pair/sweep/runs/lam1.678_c5_s0_T200/final \
        --tasks runs/real_pair/data/validation.jsonl --n 3 \
        --prefix '{"ranking": ["A", "B", "C", "D", "E", "F", "' --token G --token H

A model is NAME=PATH (a model folder, or `smollm2-135m`); all must share one tokenizer (the first model's is
used). Prints one JSON object per model and task.
"""

from __future__ import annotations

import argparse
import json

import torch

from listopd.task.prompts import encode_prompt
from listopd.task.tasks import read_tasks
from listopd.train.models import load_model, load_tokenizer
from listopd.train.role_mass import next_token_probs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=PATH")
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--n", type=int, default=3, help="first N tasks of the file")
    ap.add_argument("--prefix", required=True, help="the output text before the probed position")
    ap.add_argument("--token", action="append", default=[], help="also print this token's log-probability")
    ap.add_argument("--top", type=int, default=4)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    specs = [m.partition("=")[::2] for m in a.models]
    if any(not name or not path for name, path in specs):
        raise SystemExit("error: each model is NAME=PATH")
    tok = load_tokenizer(specs[0][1])
    prefix = tok.encode(a.prefix, add_special_tokens=False)
    named = {t: tok.encode(t, add_special_tokens=False) for t in a.token}
    for t, ids in named.items():
        if len(ids) != 1:
            raise SystemExit(f"error: --token {t!r} is {len(ids)} tokens, not one")
    tasks = read_tasks(a.tasks)[:a.n]
    for name, path in specs:
        model = load_model(path).eval()
        for task in tasks:
            # next_token_probs scores output positions; a dummy last token makes the prefix's next one the last row
            lp = next_token_probs(model, encode_prompt(task, tok), prefix + [tok.eos_token_id], log=True)[-1]
            top = sorted(range(len(lp)), key=lambda i: -lp[i])[:a.top]
            print(json.dumps({"model": name, "task": task.id,
                              "top": [[tok.decode([i]), round(float(lp[i]), 2)] for i in top],
                              **{f"logp[{t}]": round(float(lp[ids[0]]), 2) for t, ids in named.items()}},
                             ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
