"""Score model outputs against a task file: strict parse rate and failure kinds, NDCG@1, NDCG@k, recall@k
and MRR on parsed outputs, with invalid outputs scored 0 (strict) and after lenient repair, each with a
percentile bootstrap interval. Outputs file: JSONL records {"id": TASK_ID, "output": RAW_TEXT}, one per task.
"""

from __future__ import annotations

import argparse
import json

from listopd.commands.argtypes import count, positive_int




def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", required=True, help="task file (.jsonl or .jsonl.gz)")
    parser.add_argument("--outputs", required=True, help="outputs file: one {\"id\", \"output\"} record per task")
    parser.add_argument("--k", type=positive_int, default=5,
                        help="cutoff for NDCG@k and recall@k (default 5; a task with fewer candidates uses all)")
    parser.add_argument("--relevant", choices=("positive", "max"), default="positive",
                        help="relevant ids for recall/MRR: grade > 0 (default) or the task's top grade")
    parser.add_argument("--n-boot", type=positive_int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=count, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _fmt(x) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def _cell(result: dict, name: str) -> str:
    ci = result.get(name + "_ci")
    interval = "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{_fmt(result[name])}{interval}"


def format_table(result: dict) -> str:
    k = result["k"]
    pct = round(100 * result["confidence"])
    lines = [
        f"tasks {result['n']}   valid {result['n_parsed']}   k {k}   relevant: {result['relevant']}   "
        f"intervals: {pct}% bootstrap, {result['n_boot']} resamples, seed {result['seed']}",
        f"strict parse rate  {_cell(result, 'strict_parse_rate')}",
        f"repairable         {_cell(result, 'repair_rate')}",
        "",
        f"{'metric':<10} {'parsed (valid only)':<26} {'strict (invalid = 0)':<26} repaired",
    ]
    for metric in ("ndcg@1", f"ndcg@{k}", f"recall@{k}", "mrr"):
        cells = [_cell(result, f"{metric}_{v}") for v in ("parsed", "strict", "repaired")]
        lines.append(f"{metric:<10} " + " ".join(f"{c:<26}" for c in cells).rstrip())
    kinds = ", ".join(f"{name} {count}" for name, count in result["failure_kinds"].items() if count)
    lines += ["", f"kinds: {kinds}"]
    if result["n_no_relevant"]:
        lines.append(f"note: {result['n_no_relevant']} tasks have no relevant candidate (they score 0)")
    return "\n".join(lines)


def run(args) -> int:
    from listopd.task.metrics import read_outputs, score
    from listopd.task.tasks import read_tasks

    tasks = read_tasks(args.tasks, allow_mixed_k=True)
    outputs = read_outputs(args.outputs, tasks)
    result = score(tasks, outputs, k=args.k, relevant=args.relevant, n_boot=args.n_boot, seed=args.seed)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
