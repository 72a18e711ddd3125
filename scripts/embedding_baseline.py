"""Do a model's own representations say which candidate a review is about? NDCG@1 of ranking each task's
candidates by the cosine similarity of mean-pooled hidden states: the context encoded alone, each candidate's
text encoded alone, one score per decoder layer. The layer is chosen on the first file (train) and reported on
the others, so the figure is not picked on the split it is read on. Exploratory (issue 17: is the untrained
teacher's failure to rank a matter of what the model represents, or of binding the match to an id letter?).

    .venv/bin/python scripts/embedding_baseline.py smollm2-135m runs/real_pair/data/train.jsonl \\
        runs/real_pair/data/validation.jsonl runs/real_pair/data/test.jsonl [--max-tasks N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from listopd.task.metrics import bootstrap_ci, ndcg_at_k
from listopd.task.tasks import read_tasks
from listopd.train.models import load_model, load_tokenizer


def pooled(model, tok, texts: list[str]) -> np.ndarray:
    """[layers + 1, len(texts), hidden]: each text's hidden states averaged over its tokens, per layer."""
    out = []
    for text in texts:  # one at a time: no padding to mask
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)[:512]])
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        out.append(torch.stack([h[0].float().mean(0) for h in hidden]))
    return torch.stack(out, 1).numpy()


def task_scores(model, tok, task) -> np.ndarray:
    """[layers + 1, K] cosine similarities of context and candidates."""
    vec = pooled(model, tok, [task.context] + [c.text for c in task.candidates])
    vec = vec / np.linalg.norm(vec, axis=-1, keepdims=True)
    return np.einsum("lh,lkh->lk", vec[:, 0], vec[:, 1:])


def ndcg1(sims: np.ndarray, task) -> np.ndarray:
    """NDCG@1 per layer (sims [layers, K]) of the candidate each layer scores highest."""
    return np.array([ndcg_at_k([task.candidates[k].id], task.relevance, 1) for k in sims.argmax(-1)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("files", nargs="+", help="the first picks the layer; every file is reported")
    ap.add_argument("--max-tasks", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tok = load_model(args.model).eval(), load_tokenizer(args.model)
    per_file = {}
    with torch.no_grad():
        for path in args.files:
            tasks = read_tasks(path)[:args.max_tasks]
            per_file[path] = np.array([ndcg1(task_scores(model, tok, t), t) for t in tasks])  # [tasks, layers]
    first = per_file[args.files[0]].mean(0)
    layer = int(first.argmax())
    print(f"layer chosen on {args.files[0]}: {layer} (of 0–{len(first) - 1}; embeddings = 0)")
    print("per layer on it: " + " ".join(f"{x:.3f}" for x in first))
    for path, scores in per_file.items():
        lo, hi = bootstrap_ci(scores[:, layer], n_boot=2000)
        print(f"{path}: {len(scores)} tasks, NDCG@1 {scores[:, layer].mean():.3f} [{lo:.3f}, {hi:.3f}] at layer {layer}"
              f" (best layer here {scores.mean(0).max():.3f})")


if __name__ == "__main__":
    main()
