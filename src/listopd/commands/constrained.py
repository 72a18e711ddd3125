"""Constrained-decoding baseline: decode the same tasks with one model unconstrained, with JSON-schema
constrained decoding (xgrammar, one schema per task built from its candidate ids) and with our contract
automaton as the mask; score each (strict parse rate, NDCG@1 parsed / strict) and time it (completion tokens
per second, same loop and batch size). Writes one JSON file that `listopd report --baseline` shows.

    listopd constrained runs/warm/final --tasks data/validation.jsonl --n 100 --out runs/baselines/warm.json
"""

from __future__ import annotations

import argparse

from listopd.commands.argtypes import count, positive, positive_int




def add_arguments(p: argparse.ArgumentParser) -> None:
    from listopd.experiment.constrained import DECODINGS

    p.add_argument("model", metavar="MODEL", help="model folder, .gguf file or smollm2-135m")
    p.add_argument("--tasks", required=True, help="task file (.jsonl or .jsonl.gz)")
    p.add_argument("--n", type=positive_int, default=None, help="use only the first N tasks (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="greedy decoding (the default)")
    mode.add_argument("--temperature", type=positive, default=None, metavar="T",
                      help="sample at temperature T instead of greedy decoding (e.g. 1)")
    p.add_argument("--decodings", nargs="+", choices=DECODINGS, default=list(DECODINGS),
                   help="which decodings to run (default: all three)")
    p.add_argument("--any-whitespace", action="store_true",
                   help="let the grammar admit any JSON whitespace (default: canonical ', ' and ': ' only)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="rows decoded together (default 16)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="completion limit (default 64)")
    p.add_argument("--seed", type=count, default=0, help="sampling and bootstrap seed (default 0)")
    p.add_argument("--n-boot", type=positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--threads", type=count, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", required=True, metavar="OUT.json", help="where to write the result")


def format_table(result: dict) -> str:
    def f(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    lines = [f"{'decoding':<15} {'strict parse':>12} {'NDCG@1 parsed':>14} {'NDCG@1 strict':>14} "
             f"{'tokens/s':>9}  failures"]
    for r in result["rows"]:
        kinds = ", ".join(f"{k} {v}" for k, v in r["failure_kinds"].items() if k != "ok") or "none"
        lines.append(f"{r['decoding']:<15} {f(r['strict_parse_rate']):>12} {f(r['ndcg@1_parsed']):>14} "
                     f"{f(r['ndcg@1_strict']):>14} {f(r['tokens_per_second'], '.0f'):>9}  {kinds}")
    if "engine" in result:
        e = result["engine"]
        lines.append(f"engine: {e['name']} {e['version']}, {e['format']}; not enforced: "
                     f"{', '.join(result['not_enforced']) or 'nothing'}")
    return "\n".join(lines)


def run(args) -> int:
    import os
    from datetime import datetime, timezone

    import torch

    from listopd.experiment.constrained import run_baseline
    from listopd.util.errors import ListopdError
    from listopd.util.io import atomic_write_json, json_safe
    from listopd.train.models import check_model_vocabulary, load_model, load_tokenizer
    from listopd.task.tasks import read_tasks

    if args.threads < 0:
        raise ListopdError(f"--threads must be ≥ 0, got {args.threads}")
    if os.path.isdir(args.out):
        raise ListopdError(f"--out {args.out} is a folder; give a file name (OUT.json)")
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = read_tasks(args.tasks, allow_mixed_k=True)[:args.n]
    if not tasks:
        raise ListopdError(f"{args.tasks}: no tasks")
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    check_model_vocabulary(model, tokenizer)
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ListopdError(f"{args.model}: the tokenizer needs an EOS and a PAD token")
    if "json-schema" in args.decodings:
        from listopd.experiment.constrained import _xgrammar

        _xgrammar()  # a missing engine is refused before any decoding
    greedy = args.temperature is None
    result = run_baseline(model, tokenizer, tasks, decodings=tuple(args.decodings), greedy=greedy,
                          temperature=args.temperature or 1.0, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, seed=args.seed, any_whitespace=args.any_whitespace,
                          n_boot=args.n_boot, source=str(args.tasks))
    result = {"model": str(args.model), "tasks": str(args.tasks), **result,
              "machine": {"device": str(next(model.parameters()).device), "torch_threads": torch.get_num_threads()},
              "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(args.out, json_safe(result))
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0
