"""Replay the cliff guard (train/cliff.py ParseRateGuard, the trainer's own class) over the metrics logs of a
sweep's runs, for a grid of windows and margins: when it would have stopped each run, and what the validation
parse rate was there and at its best before (issue 15 step 7: a guard that fires after the damage is no guard).

    .venv/bin/python scripts/guard_replay.py runs/round2_explore/lr3e-4 [--windows 5 10 20] [--margins 0.1 0.2 0.3]

A run "collapsed" when its final validation strict parse rate is below half of its best evaluation's, or of
`--reference` (the warm start's own rate: a run that collapses from its first steps has no good evaluation to
fall from); with `--onset-threshold T`, when it is below T instead (a locked sweep's onset rule). Prints,
per setting: the runs it stops, the false alarms (stopped, not collapsed), the misses (collapsed, never
stopped), and for the stopped collapses the lag from the first evaluation below half the best to the stop
(negative: it stopped before the validation showed the drop). Reads only; writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from listopd.train.cliff import ParseRateGuard


def load(run: Path) -> tuple[list[float], list[tuple[int, float]], float | None]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rollout = [r["rollout_parse_rate"] for r in rows]
    evals = [(r["step"], r["val_strict_parse_rate"]) for r in rows if "val_strict_parse_rate" in r]
    summary = run / "summary.json"
    final = json.loads(summary.read_text()).get("val_strict_parse_rate") if summary.is_file() else None
    if final is not None:
        evals.append((len(rows), final))
    return rollout, evals, final


def fire_step(rollout: list[float], window: int, margin: float) -> int | None:
    guard = ParseRateGuard(margin, window)
    for step, rate in enumerate(rollout, start=1):
        if guard.update(step, rate):
            return step
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--windows", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--reference", type=float, default=0.0,
                    help="the warm start's validation parse rate (collapse: final below half of it or of the best)")
    ap.add_argument("--onset-threshold", type=float,
                    help="count a run as collapsed when its final rate is below this (the lock's onset rule) "
                         "instead of below half of its best")
    ap.add_argument("--detail", type=float, nargs=2, metavar=("WINDOW", "MARGIN"),
                    help="also list, per run, where this setting stops and its best step (the export's bound)")
    a = ap.parse_args()
    runs = {}
    for run in sorted((Path(a.sweep) / "runs").iterdir()):
        if (run / "metrics.jsonl").is_file():
            rollout, evals, final = load(run)
            if evals and final is not None:
                best = max([v for _, v in evals] + [a.reference])
                limit = best / 2 if a.onset_threshold is None else a.onset_threshold
                runs[run.name] = (rollout, evals, final < limit, best, limit)
    print(f"{len(runs)} finished runs; collapsed: {', '.join(n for n, r in runs.items() if r[2]) or 'none'}\n")
    print("| window | margin | stopped | false alarms | misses | lag of the stop after the validation drop (steps) |")
    print("|---|---|---|---|---|---|")
    for w in a.windows:
        for m in a.margins:
            stopped, false, missed, lags = 0, 0, 0, []
            for name, (rollout, evals, collapsed, best, limit) in runs.items():
                at = fire_step(rollout, w, m)
                stopped += at is not None
                false += at is not None and not collapsed
                missed += at is None and collapsed
                if at is not None and collapsed:
                    peak = max([s2 for s2, v2 in evals if v2 == best] or [0])  # 0: the reference (warm start)
                    drop = next(s for s, v in evals if v < limit and s >= peak)
                    lags.append(f"{name.split('_')[0]}: {at - drop:+d}")
            print(f"| {w} | {m:g} | {stopped} | {false} | {missed} | {', '.join(lags) or '—'} |")
    if a.detail:
        w, m = int(a.detail[0]), a.detail[1]
        print(f"\nwindow {w}, margin {m:g}, per run:\n")
        print("| run | collapsed | final validation | stops at step | guard's best step |")
        print("|---|---|---|---|---|")
        for name, (rollout, evals, collapsed, best, limit) in runs.items():
            guard = ParseRateGuard(m, w)
            at = next((step for step, rate in enumerate(rollout, start=1) if guard.update(step, rate)), None)
            print(f"| {name} | {'yes' if collapsed else 'no'} | {evals[-1][1]:.2f} | {at or '—'} | "
                  f"{guard.best_step if at else '—'} |")


if __name__ == "__main__":
    main()
