"""Build and inspect listwise task files (one JSON task per line).

  listopd data amazon --subset DIR | --reviews FILE --meta FILE  --out DIR [--task next-item|review-item]
      Amazon Reviews 2023 (Amazon_Fashion) -> OUT/{train,validation,test}.jsonl + OUT/stats.json
  listopd data synth --out DIR [--seed S --n-users N --n-items N --k 8 ...]
      the embedded synthetic fashion shop -> OUT/{train,validation,test}.jsonl + OUT/stats.json
  listopd data stats FILE [FILE ...]
      tasks per split, K, text lengths (characters), relevance values, position of the top candidate;
      lines that do not read as tasks are listed as file:line and make the exit status 1

Every file is written atomically (temporary file + rename): a crash leaves no partial file.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from listopd.util.io import atomic_write_json
from listopd.task.tasks import SPLITS, Task, read_tasks, write_tasks
from listopd.commands.argtypes import at_least, count, positive_int

QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def _weights(text: str) -> tuple[float, ...]:
    """--weights C,S,CO,B,P: five numbers, comma-separated (their range is checked by SynthConfig)."""
    try:
        values = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected five comma-separated numbers, got {text!r}") from None
    if len(values) != 5:
        raise argparse.ArgumentTypeError(f"expected five comma-separated numbers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage lines of the docstring
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True,
                                parser_class=type(parser))

    p = sub.add_parser("amazon", help="Amazon Reviews 2023 Amazon_Fashion -> task files")
    src = p.add_argument_group("source (a subset folder, or both raw files)")
    src.add_argument("--subset", metavar="DIR", help="folder with interactions.csv + items.csv "
                     "(+ amazon_subset_0512.csv.gz for review-item)")
    src.add_argument("--reviews", metavar="FILE", help="Amazon_Fashion.jsonl(.gz)")
    src.add_argument("--meta", metavar="FILE", help="meta_Amazon_Fashion.jsonl(.gz)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--task", choices=("next-item", "review-item"), default="next-item")
    p.add_argument("--min-user-interactions", type=positive_int, default=None, metavar="N",
                   help="keep users with >= N interactions (default 3 for next-item, 1 for review-item)")
    p.add_argument("--seed", type=count, default=0, help="negative sampling and shuffling seed (default 0)")
    p.add_argument("--k", type=at_least(2), default=8, help="candidates per task (default 8)")
    p.add_argument("--history-len", type=positive_int, default=5, help="most recent history titles shown (default 5)")
    p.add_argument("--no-train-tasks", action="store_true",
                   help="next-item: no train task per earlier position (only validation and test)")
    p.add_argument("--max-review-chars", type=positive_int, default=500, help="review text cut (default 500)")
    p.add_argument("--max-title-chars", type=positive_int, default=150, help="item title cut (default 150)")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed input line")
    p.set_defaults(_data_run=run_amazon)

    p = sub.add_parser("synth", help="the embedded synthetic fashion shop -> task files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=count, default=0, help="seed of the catalogue, the users and the split (default 0)")
    p.add_argument("--n-users", type=at_least(3), default=2000, help="users, one split each (default 2000)")
    p.add_argument("--n-items", type=positive_int, default=800, help="catalogue size (default 800)")
    p.add_argument("--tasks-per-user", type=positive_int, default=1)
    p.add_argument("--history-len", type=positive_int, default=5, help="most history titles shown (default 5)")
    p.add_argument("--min-history", type=positive_int, default=3, help="fewest history titles shown (default 3)")
    p.add_argument("--k", type=at_least(2), default=8)
    p.add_argument("--validation-frac", type=float, default=0.1, help="fraction of users (default 0.1)")
    p.add_argument("--test-frac", type=float, default=0.1, help="fraction of users (default 0.1)")
    p.add_argument("--title-format", choices=("full", "short", "plain"), default="full",
                   help="full: brand, audience, descriptor, noun, colour, style, material; short: noun, colour, "
                        "style; plain: style, colour, category")
    p.add_argument("--weights", type=_weights, default=(1.0, 0.7, 0.6, 0.5, 0.5), metavar="C,S,CO,B,P",
                   help="utility weights of category, style, colour, brand, price (default 1.0,0.7,0.6,0.5,0.5)")
    p.add_argument("--utility-noise", type=float, default=0.1, help="sd of the per user-item noise (default 0.1)")
    p.add_argument("--history-uniform-mix", type=float, default=0.15,
                   help="share of off-taste uniform draws in the purchase history (default 0.15)")
    p.set_defaults(_data_run=run_synth)

    p = sub.add_parser("stats", help="summarise task files")
    p.add_argument("files", nargs="+", metavar="FILE", help="task JSONL file(s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(_data_run=run_stats)


def run(args: argparse.Namespace) -> int:
    return args._data_run(args)


# ---------------------------------------------------------------- writing and reading

def write_splits(out: Path, tasks: list[Task]) -> dict[str, str]:
    """OUT/{split}.jsonl for every split that has tasks (tasks.write_tasks: validated, atomic) -> {split: path}.
    A split without tasks gets no file (task files are never empty); an older file of that name is removed so
    the folder shows only this run."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        path = out / f"{split}.jsonl"
        chosen = [t for t in tasks if t.split == split]
        if chosen:
            write_tasks(path, chosen)
            paths[split] = str(path)
        elif path.exists():
            path.unlink()
    return paths


def load_tasks(path: str) -> tuple[list[Task], list[str]]:
    """(good tasks, one 'file:line: field: reason' per bad line): tasks.read_tasks in collect_errors mode,
    any K allowed (the summary reports the K distribution)."""
    tasks, errors = read_tasks(path, collect_errors=True, allow_mixed_k=True)
    return tasks, [str(e) for e in errors]


# ---------------------------------------------------------------- summary

def quantiles(values: list[int], qs=QUANTILES) -> dict[str, int]:
    """Nearest-rank quantiles, keyed 'p0', 'p10', 'p50', 'p90', 'p100'."""
    if not values:
        return {}
    v = sorted(values)
    return {f"p{round(q * 100)}": v[min(len(v) - 1, int(round(q * (len(v) - 1))))] for q in qs}


def _num_key(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def summarise(tasks: list[Task]) -> dict:
    """Counts per split, K, text lengths in characters, relevance values, and where the top candidate sits:
    a histogram of the 0-based position of the single highest-relevance candidate, over tasks with a unique top
    (tasks with a tied top, and tasks whose candidates are all equally relevant, are counted apart)."""
    top_pos, ties, flat = Counter(), 0, 0
    for t in tasks:
        rels = [t.relevance.get(c.id, 0.0) for c in t.candidates]
        if not rels:
            continue
        best = max(rels)
        if all(r == best for r in rels):
            flat += 1
            continue
        if rels.count(best) > 1:
            ties += 1
            continue
        top_pos[rels.index(best)] += 1
    return {
        "tasks": len(tasks),
        "splits": {s: n for s, n in Counter(t.split for t in tasks).most_common()},
        "k": {str(k): n for k, n in sorted(Counter(t.k for t in tasks).items())},
        "context_chars": quantiles([len(t.context) for t in tasks]),
        "candidate_chars": quantiles([len(c.text) for t in tasks for c in t.candidates]),
        "relevance": {_num_key(v): n for v, n in sorted(Counter(r for t in tasks
                                                               for r in t.relevance.values()).items())},
        "top_position": {str(p): n for p, n in sorted(top_pos.items())},
        "top_ties": ties,
        "all_equal_relevance": flat,
    }


def format_summary(s: dict) -> str:
    def kv(d):
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"
    return "\n".join([
        f"tasks: {s['tasks']} ({kv(s['splits'])})",
        f"K: {kv(s['k'])}",
        f"context chars: {kv(s['context_chars'])}",
        f"candidate chars: {kv(s['candidate_chars'])}",
        f"relevance: {kv(s['relevance'])}",
        f"position of the unique top candidate (0 = first): {kv(s['top_position'])}; "
        f"tied top: {s['top_ties']} tasks, all equal: {s['all_equal_relevance']}",
    ])


# ---------------------------------------------------------------- subcommands

def run_amazon(args: argparse.Namespace) -> int:
    from listopd.task.data.amazon import format_stats, load_amazon

    tasks, stats = load_amazon(
        reviews=args.reviews, meta=args.meta, subset=args.subset, task=args.task,
        min_user_interactions=args.min_user_interactions, k=args.k, seed=args.seed,
        history_len=args.history_len, train_tasks=not args.no_train_tasks,
        max_review_chars=args.max_review_chars, max_title_chars=args.max_title_chars, strict=args.strict)
    out = Path(args.out)
    paths = write_splits(out, tasks)
    atomic_write_json(out / "stats.json", {**stats.to_dict(), "seed": args.seed, "k": args.k, "files": paths})
    print(format_stats(stats))
    _print_written(paths, out)
    return 0


def _print_written(paths: dict[str, str], out: Path) -> None:
    empty = [s for s in SPLITS if s not in paths]
    print(f"wrote {', '.join(paths.values())}, {out / 'stats.json'}"
          + (f" (no tasks, no file: {', '.join(empty)})" if empty else ""))


def run_synth(args: argparse.Namespace) -> int:
    from listopd.task.data.synth import SynthConfig, make_synth_tasks

    cfg = SynthConfig(n_items=args.n_items, n_users=args.n_users, tasks_per_user=args.tasks_per_user,
                      history_len=args.history_len, min_history=args.min_history, k=args.k,
                      validation_frac=args.validation_frac, test_frac=args.test_frac, seed=args.seed,
                      title_format=args.title_format, weights=args.weights,
                      utility_noise=args.utility_noise, history_uniform_mix=args.history_uniform_mix)
    tasks = make_synth_tasks(cfg)
    out = Path(args.out)
    paths = write_splits(out, tasks)
    counts = {s: sum(t.split == s for t in tasks) for s in SPLITS}
    atomic_write_json(out / "stats.json", {"source": "synth", "config": asdict(cfg), "tasks": counts,
                                           "files": paths})
    print("synth tasks: " + ", ".join(f"{s} {n}" for s, n in counts.items()) + f" (k={cfg.k}, seed={cfg.seed})")
    _print_written(paths, out)
    return 0


def run_stats(args: argparse.Namespace) -> int:
    tasks, problems = [], []
    for path in args.files:
        t, p = load_tasks(path)
        tasks += t
        problems += p
    summary = {**summarise(tasks), "problems": len(problems), "problem_examples": problems[:10]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
        if problems:
            print(f"problems: {len(problems)}")
            for p in problems[:10]:
                print(f"  {p}")
    return 1 if problems else 0
