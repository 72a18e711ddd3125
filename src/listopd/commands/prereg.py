"""Pre-registered tests of the predicted cliff λ* against a λ sweep (see listopd.experiment.prereg for the rules).

    listopd prereg lock SWEEP.yaml     # before any run: writes OUT/prereg.json (predictions, windows, hash)
    listopd prereg check SWEEP.yaml    # after the sweep: pass / fail per test, OUT/prereg_result.json

check refuses (exit 2) a missing, edited or out-of-date lock, runs that started before the lock, and
missing runs (unless --partial). Exit status of check: 0 all tests pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lock = sub.add_parser("lock", help="write OUT/prereg.json before any run exists")
    lock.add_argument("config", metavar="CONFIG.yaml", help="the sweep file with a prereg: section")
    check = sub.add_parser("check", help="evaluate the locked tests on the finished runs")
    check.add_argument("config", metavar="CONFIG.yaml", help="the sweep file with a prereg: section")
    check.add_argument("--partial", action="store_true", help="evaluate although some runs are missing")
    check.add_argument("--json", action="store_true", help="print prereg_result.json instead of the report")


def run(args) -> int:
    from listopd.experiment import prereg
    from listopd.experiment.sweep import load_sweep

    sweep = load_sweep(args.config)
    if sweep.prereg is None:
        raise prereg.PreregRefusal(f"{args.config} has no prereg: section")
    if args.action == "lock":
        content = prereg.lock(sweep)
        print(prereg.format_lock(content))
        print(f"wrote {sweep.out / 'prereg.json'}")
        return 0
    result = prereg.check(sweep, partial=args.partial)
    print(json.dumps(result, indent=1) if args.json else prereg.format_check(result))
    return 0 if result["overall"] == "pass" else 1
