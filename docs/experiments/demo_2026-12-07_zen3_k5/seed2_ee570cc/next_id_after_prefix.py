"""Next-token distributions after a ranking prefix, averaged over a demo's first 16 validation tasks (top 5), for each
model named: a stage of the demo (default: teacher and warm) or any run folder holding final/.

    python next_id_after_prefix.py <demo folder> '{"ranking": ["A", "E", "'
    python next_id_after_prefix.py runs/n_s2 '{"ranking": ["B", "D", "A", "' teacher warm runs/stall_s2_T360
"""
import sys
from pathlib import Path

import torch

from listopd.task.prompts import encode_prompt
from listopd.task.tasks import read_tasks
from listopd.train.models import load_model, load_tokenizer

demo, prefix, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:] or ["teacher", "warm"]
torch.set_num_threads(1)
tok = load_tokenizer(demo / "teacher" / "final")
tasks = read_tasks(demo / "data" / "validation.jsonl")[:16]
pieces = [tok.decode([i]) for i in range(len(tok))]
for name in names:
    folder = Path(name) if "/" in name else demo / name
    model = load_model(folder / "final").eval()
    mean = torch.zeros(len(tok))
    for task in tasks:
        ids = encode_prompt(task, tok) + tok.encode(prefix, add_special_tokens=False)
        with torch.no_grad():
            mean += torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1) / len(tasks)
    top = torch.topk(mean, 5)
    print(f"{name:24s} {prefix!r}", [(pieces[i], round(float(p), 3)) for p, i in zip(top.values, top.indices)])
