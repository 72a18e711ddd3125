"""The teacher's and the warm start's next-token distribution after a ranking prefix, averaged over the first 16
validation tasks: `python next_id_after_prefix.py <demo folder> '{"ranking": ["A", "E", "'` (top 5)."""
import sys

import torch

from listopd.task.prompts import encode_prompt
from listopd.task.tasks import read_tasks
from listopd.train.models import load_model, load_tokenizer

run, prefix = sys.argv[1], sys.argv[2]
tok = load_tokenizer(f"{run}/teacher/final")
tasks = read_tasks(f"{run}/data/validation.jsonl")[:16]
pieces = [tok.decode([i]) for i in range(len(tok))]
for name in ("teacher", "warm"):
    model = load_model(f"{run}/{name}/final").eval()
    mean = torch.zeros(len(tok))
    for task in tasks:
        ids = encode_prompt(task, tok) + tok.encode(prefix, add_special_tokens=False)
        with torch.no_grad():
            mean += torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1) / len(tasks)
    top = torch.topk(mean, 5)
    print(name, repr(prefix), [(pieces[i], round(float(p), 3)) for p, i in zip(top.values, top.indices)])
