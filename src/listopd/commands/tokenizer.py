"""Train a byte-level BPE tokenizer with a ChatML chat template on task text (for tiny models).

  listopd tokenizer train --tasks FILE [FILE ...] --out DIR [--vocab-size 2048]
      trains on every task's rendered chat (system + user prompt, then the target answer), saves the
      tokenizer to DIR (tokenizer.json, tokenizer_config.json, chat_template.jinja), and prints the
      vocabulary size and the mean tokens per prompt and per target (target = answer + EOS)

The same task files in the same order give an identical tokenizer.json. See listopd.task.tokenizer.
"""

from __future__ import annotations

import argparse
import json
from listopd.commands.argtypes import at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True,
                                parser_class=type(parser))
    p = sub.add_parser("train", help="train on task files and save to a folder")
    p.add_argument("--tasks", nargs="+", required=True, metavar="FILE", help="task JSONL file(s)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--vocab-size", type=at_least(259), default=2048, metavar="N",
                   help="most tokens, including 3 special tokens and 256 bytes (default 2048)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(_tokenizer_run=run_train)


def run(args: argparse.Namespace) -> int:
    return args._tokenizer_run(args)


def run_train(args: argparse.Namespace) -> int:
    from listopd.util.errors import ListopdError
    from listopd.task.prompts import render_prompt, target_text
    from listopd.task.tasks import read_tasks
    from listopd.task.tokenizer import task_texts, train_tokenizer

    if args.vocab_size < 259:
        raise ListopdError(f"--vocab-size must be at least 259 (3 special tokens + 256 bytes), got {args.vocab_size}")
    tasks = []
    for path in args.tasks:
        tasks += read_tasks(path, allow_mixed_k=True)
    tok = train_tokenizer(task_texts(tasks), vocab_size=args.vocab_size)
    try:
        tok.save_pretrained(args.out)
    except OSError as e:
        raise ListopdError(f"cannot write {args.out}: {e.strerror or e}") from None

    n_prompt = sum(len(tok(render_prompt(t, tok), add_special_tokens=False)["input_ids"]) for t in tasks)
    n_target = sum(len(tok(target_text(t) + tok.eos_token, add_special_tokens=False)["input_ids"]) for t in tasks)
    summary = {
        "out": args.out,
        "tasks": len(tasks),
        "vocab_size": len(tok),
        "vocab_size_requested": args.vocab_size,
        "mean_prompt_tokens": round(n_prompt / len(tasks), 2),
        "mean_target_tokens": round(n_target / len(tasks), 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"tokenizer: {summary['vocab_size']} tokens (asked for at most {args.vocab_size}) "
              f"from {len(tasks)} tasks -> {args.out}")
        print(f"mean tokens per prompt {summary['mean_prompt_tokens']}, per target "
              f"{summary['mean_target_tokens']} (answer + EOS)")
    return 0
