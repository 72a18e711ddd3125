"""The size axis: several models side by side on one task split — parameters, strict parse of one sample per task
at T = 1 (the fixed evaluation seed) and of greedy outputs, NDCG@1 parsed and strict, and tokens/s (tokens of
the decoded outputs over the whole generation time, prompt pass included) —
as the JSON list `listopd report --size-axis` reads, plus each model's outputs (JSONL, {"id", "output"}) for
`listopd score` and `listopd judge`.

    .venv/bin/python scripts/size_axis.py teacher=runs/real_pair/teacher/final student=runs/real_pair/warm/final \
        --tasks runs/real_pair/data/test.jsonl --n 80 --out runs/real_pair/size_axis.json

A model is NAME=PATH (a model folder, or `smollm2-135m`); its tokenizer is loaded from the same place. Models
already in --out (same name, path, tasks and n) are kept, so a re-run measures only the new ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SAMPLED, GREEDY = "sampled", "greedy"


def measure(name: str, path: str, tasks, *, max_new_tokens: int, batch_size: int, outputs_dir: Path) -> dict:
    from listopd.task.metrics import score
    from listopd.train.evaluation import evaluation_outputs
    from listopd.train.models import count_parameters, load_model, load_tokenizer

    tokenizer, model = load_tokenizer(path), load_model(path).eval()
    row = {"name": name, "path": path, "parameters": count_parameters(model)}
    for decoding in (SAMPLED, GREEDY):
        t0 = time.perf_counter()
        outputs = evaluation_outputs(model, tokenizer, tasks, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                     temperature=1.0 if decoding == SAMPLED else 0.0)
        seconds = time.perf_counter() - t0
        tokens = sum(len(tokenizer.encode(o, add_special_tokens=False)) for o in outputs.values())
        metrics = score(tasks, outputs, n_boot=500)
        file = outputs_dir / f"{name}.{decoding}.jsonl"
        file.write_text("".join(json.dumps({"id": t.id, "output": outputs[t.id]}) + "\n" for t in tasks),
                        encoding="utf-8")
        row[decoding] = {k: metrics[k] for k in ("strict_parse_rate", "strict_parse_rate_ci", "ndcg@1_parsed",
                                                 "ndcg@1_strict") if k in metrics}
        row[decoding].update(tokens_per_s=round(tokens / seconds, 1), seconds=round(seconds, 1),
                             outputs=str(file))
    # the report's size-axis columns: the sampled numbers (the distribution on-policy training shapes)
    row.update({k: row[SAMPLED].get(k) for k in ("strict_parse_rate", "ndcg@1_parsed", "ndcg@1_strict")})
    return row


def parse_model(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"error: model {spec!r} is not NAME=PATH")
    return name, path


def main(argv: list[str] | None = None) -> int:
    from listopd.task.tasks import read_tasks
    from listopd.util.io import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="NAME=PATH")
    ap.add_argument("--tasks", required=True, help="task file (the split the models are compared on)")
    ap.add_argument("--n", type=int, default=80, help="first N tasks (default 80)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16, help="generation batch (16: the trainer's validation "
                    "draws; the sampled outputs depend on it)")
    ap.add_argument("--out", required=True, help="size-axis JSON list (outputs go to a folder beside it)")
    args = ap.parse_args(argv)

    models = [parse_model(m) for m in args.models]
    tasks = read_tasks(args.tasks)[:args.n]
    out = Path(args.out)
    outputs_dir = out.parent / f"{out.stem}_outputs"
    outputs_dir.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.is_file():
        done = {r["name"]: r for r in json.loads(out.read_text(encoding="utf-8"))
                if r.get("tasks") == args.tasks and r.get("n") == len(tasks)}
    kept = {n: done[n] for n, q in models if n in done and done[n].get("path") == q}
    measured = {}

    def requested_rows():  # every requested model measured so far (now or before), in the command's order
        return [measured.get(n) or kept[n] for n, _ in models if n in measured or n in kept]

    for name, path in models:
        if name in kept:
            continue
        print(f"{name}: {path} on {len(tasks)} tasks of {args.tasks}…", file=sys.stderr, flush=True)
        row = measure(name, path, tasks, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                      outputs_dir=outputs_dir)
        measured[name] = {**row, "tasks": args.tasks, "n": len(tasks)}
        atomic_write_json(out, requested_rows())  # an interrupted run keeps what it measured
        s, g = row[SAMPLED], row[GREEDY]
        print(f"{name}: {row['parameters']:,} parameters; strict parse {s['strict_parse_rate']:.3f} sampled, "
              f"{g['strict_parse_rate']:.3f} greedy; NDCG@1 parsed {s['ndcg@1_parsed']}, strict "
              f"{s['ndcg@1_strict']:.3f}; {s['tokens_per_s']} tokens/s sampled", flush=True)
    atomic_write_json(out, requested_rows())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
