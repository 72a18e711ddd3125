"""The `listopd` command. Each subcommand lives in `listopd/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`; heavy imports (torch, transformers) happen inside `run`,
so `listopd lambda-star` and `--help` stay fast.

User errors (bad arguments, bad files, out-of-domain numbers) and file-system refusals (a read-only folder, a
full disk) print one line on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from listopd.util.errors import ListopdError

# name -> (module under listopd.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the main job, end to end on the embedded data and tiny models (under 10 minutes)"),
    "score": ("score", "score model outputs against a task file: strict parse, NDCG, recall, MRR"),
    "data": ("data", "build task files: Amazon Reviews 2023 loaders, the embedded synthetic catalogue, stats"),
    "simulate": ("simulate", "train one categorical position with the real loss over a λ grid; find the onset"),
    "sft": ("sft", "supervised fine-tuning on a task file (the teacher and the warm start)"),
    "opd": ("opd", "ListOPD: on-policy distillation with reward extrapolation λ and clip c"),
    "calibrate": ("calibrate", "measure p and b from the real models on the real data; predict the cliff λ*"),
    "sweep": ("sweep", "run a λ sweep from one YAML file: resumable runs, one result file each, --dry-run plan"),
    "prereg": ("prereg", "pre-registered tests of λ*: lock the predictions before the sweep, check them after"),
    "lambda-star": ("lambda_star", "closed-form extrapolation cliff λ*(p, b, c) and its base-neutral form"),
    "tokenizer": ("tokenizer", "train a byte-level BPE tokenizer with a chat template on task text"),
    "report": ("report", "Markdown report of a λ sweep: parse rate and NDCG vs λ, onsets, λ*, tests, size axis"),
    "serve": ("serve", "OpenAI-compatible HTTP server for a model: batched generation, bounded queue"),
    "judge": ("judge", "grade model outputs with a versioned rubric through any OpenAI-compatible endpoint"),
    "constrained": ("constrained", "JSON-schema constrained decoding (xgrammar) baseline: parse rate, NDCG, tokens/s"),
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the message on bad arguments; we print one line, exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from listopd import __doc__ as package_doc, __version__

    parser = _OneLineParser(prog="listopd", description=package_doc.splitlines()[0])

    parser.add_argument("--version", action="version", version=f"listopd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"listopd.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except ListopdError as e:
        _close_progress_bars()
        sys.stderr.write(f"listopd {args.command}: error: {e}\n")
        return 2
    except OSError as e:  # the file system refused (read-only folder, permissions, full disk): say where
        _close_progress_bars()
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"listopd {args.command}: error: {e.strerror or e}{where}\n")
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        sys.stderr.write(f"listopd {args.command}: interrupted\n")
        return 130


def _close_progress_bars() -> None:
    """Finish any tqdm bar a failed command left open, so that the error gets a line of its own (not glued
    to the end of the bar, and not overdrawn by the bar when it is garbage-collected)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        bar.close()


if __name__ == "__main__":
    raise SystemExit(main())
