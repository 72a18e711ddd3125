"""How long each ListOPD run takes to (re)learn the output format, from its per-step metrics log: the lowest
W-step mean of the rollout parse rate in the first `--early` steps (the dip), the first step at which that mean
reaches `--level`, and the final validation strict parse rate; then, per (arm, λ), the range of those first
steps over seeds (issue 15: a locked onset at a fixed budget counts runs that have not come back yet).

    .venv/bin/python scripts/format_recovery.py docs/experiments/round2/runs docs/experiments/issue19/runs

Each argument is a folder of run folders (RUN/metrics.jsonl, RUN/summary.json). A run whose name appears in an
earlier folder is skipped (issue 19's plain runs repeat round 2's bit for bit). The arm is the name's suffix after
the seed with the clip before it (`c5 T300`, `c2 T300`, `c5 T300_aware`, `c5 T900_lr0.0001`), so that runs at
another clip never share a row. Reads only; writes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_replay import load  # noqa: E402  (a run's rollout parse rates and final validation rate)

NAME = re.compile(r"lam(?P<lam>[\d.]+)_c(?P<clip>[\d.]+)_s(?P<seed>\d+)_(?P<arm>.+)")


def moving_means(rates: list[float], window: int) -> list[tuple[int, float]]:
    """(step at the window's end, mean of the rates of its `window` steps), steps counted from 1."""
    return [(i + window, sum(rates[i:i + window]) / window) for i in range(len(rates) - window + 1)]


def recovery(rates: list[float], window: int, early: int, level: float) -> tuple[float | None, int | None]:
    """(the dip: lowest windowed mean ending within the first `early` steps, first step the mean is ≥ level)."""
    means = moving_means(rates, window)
    dip = min((m for step, m in means if step <= early), default=None)
    back = next((step for step, m in means if m >= level), None)
    return dip, back


def show(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--window", type=int, default=10, help="steps in the moving mean")
    ap.add_argument("--early", type=int, default=60, help="the dip is looked for in the first this many steps")
    ap.add_argument("--level", type=float, default=0.5, help="the format counts as back at this rollout rate")
    args = ap.parse_args(argv)
    seen, first_back = set(), defaultdict(list)
    print(f"| run | dip (min {args.window}-step mean, first {args.early} steps) | first step ≥ {args.level} "
          "| final validation |\n|---|---|---|---|")
    for folder in args.folders:
        for run in sorted(p for p in folder.iterdir() if (p / "metrics.jsonl").is_file()):
            match = NAME.fullmatch(run.name)
            if run.name in seen or not match:
                continue
            seen.add(run.name)
            rates, _, final = load(run)
            dip, back = recovery(rates, args.window, args.early, args.level)
            arm = f"c{float(match['clip']):g} {match['arm']}"
            first_back[(arm, float(match["lam"]))].append(back)
            print(f"| {run.name} | {show(dip, '.2f')} | {show(back, 'd')} | {show(final, '.3f')} |")
    print(f"\n| arm | λ | seeds | first step ≥ {args.level} (range; never = not within the run) |\n"
          "|---|---|---|---|")
    for (arm, lam), steps in sorted(first_back.items()):
        reached = [s for s in steps if s is not None]
        span = f"{min(reached)}–{max(reached)}" if reached else "—"
        never = len(steps) - len(reached)
        print(f"| {arm} | {lam:g} | {len(steps)} | {span}{f' ({never} never)' if never else ''} |")


if __name__ == "__main__":
    main()
