"""How many different greedy outputs a demo model gives over the first N validation tasks, and the commonest.

A model that reads its prompt gives many; the K = 5 demo's tiny students give one or two fixed strings whatever the
task says (a template), and whether that template is a permutation decides whether ListOPD lifts them.

    .venv/bin/python docs/experiments/demo_2026-12-07_zen4_k5/greedy_templates.py runs/demo warm opd_below [--n 48]
"""
import argparse
import collections

import torch

from listopd.task.prompts import reference_ranking
from listopd.task.tasks import read_tasks
from listopd.train.evaluation import generate_outputs
from listopd.train.models import load_model, load_tokenizer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("demo", help="a demo's output folder (runs/demo)")
parser.add_argument("models", nargs="+", help="stage folders under it: teacher, warm, opd_below, opd_above")
parser.add_argument("--n", type=int, default=48, help="validation tasks (default 48)")
args = parser.parse_args()

torch.set_num_threads(1)
tokenizer = load_tokenizer(f"{args.demo}/tokenizer")
tasks = read_tasks(f"{args.demo}/data/validation.jsonl")[: args.n]
k = tasks[0].k
modes = [collections.Counter(reference_ranking(t)[i] for t in tasks).most_common(1)[0][0] for i in range(k)]
print(f"{args.demo}: {len(tasks)} validation tasks; the references' commonest id at each position: {' '.join(modes)}")
for name in args.models:
    outputs = generate_outputs(load_model(f"{args.demo}/{name}/final"), tokenizer, tasks, max_new_tokens=40)
    counts = collections.Counter(outputs.values())
    print(f"  {name}: {len(counts)} distinct greedy outputs; commonest: "
          + "; ".join(f"{n}× {text}" for text, n in counts.most_common(3)))
