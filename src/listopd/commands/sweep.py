"""Run a λ sweep: many ListOPD runs from one YAML file (out, base, grid, prereg; see listopd.experiment.sweep).

Runs go one after another in a fixed order; each is an ordinary OPD run folder OUT/runs/NAME/ (an
interrupted run resumes from its checkpoint) and, when finished, OUT/results/NAME.json. Re-running the
same command skips finished runs. Every run may cross the predicted cliff (allow_above_cliff). With a
prereg: section the sweep refuses to start until `listopd prereg lock` has locked this very config.

    listopd sweep configs/sweep.yaml --dry-run        # the plan, each run's status, the remaining time
    listopd sweep configs/sweep.yaml                  # run (or resume) everything
    listopd sweep configs/sweep.yaml --only 'c5_*'    # only runs whose name matches
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG.yaml", help="the sweep file")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan, each run's status (done / partial / todo) and the estimated time left")
    p.add_argument("--only", metavar="PATTERN",
                   help="run only runs whose name matches (glob; without * ? [ a substring match)")
    p.add_argument("--unlocked", action="store_true",
                   help="run although the prereg: section is not locked for this config (prereg check will refuse)")
    p.add_argument("--quiet", action="store_true", help="no per-run progress bar")


def run(args) -> int:
    from listopd.util.errors import ListopdError
    from listopd.experiment.sweep import check_lock, dry_run, load_sweep, run_sweep

    sweep = load_sweep(args.config)
    if args.dry_run:
        dry_run(sweep, only=args.only)
        return 0
    why = check_lock(sweep)
    if why and not args.unlocked:
        raise ListopdError(why)
    outcome = run_sweep(sweep, only=args.only, quiet=args.quiet, echo=lambda s: print(s, flush=True))
    if outcome["failed"]:
        print(f"{len(outcome['failed'])} run(s) failed: {', '.join(outcome['failed'])}; re-run to retry them")
        return 1
    print(f"all {len(outcome['done'])} selected runs done; results in {sweep.out / 'results'}")
    return 0
