"""Write a self-contained Markdown report of a λ sweep: strict parse rate and NDCG@1 against λ per seed
beside the predicted λ*(p, b, c) and its interval, the onset per seed, the calibration table, the
pre-registered tests' verdicts, the size axis and a short summary of what the numbers say.

Missing pieces (no calibration, no prereg_result.json, an unfinished sweep) are named on the page.

    listopd report runs/sweep --calibration runs/calibration/calibration.json --size-axis size.json \\
        --baseline runs/baselines/warm.json
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="sweep folder (results/*.json, prereg*.json)")
    p.add_argument("--calibration", metavar="FILE",
                   help="calibration.json (default: SWEEP_DIR/calibration.json, else the file the runs name)")
    p.add_argument("--size-axis", metavar="FILE",
                   help="JSON list of {name, parameters, strict_parse_rate, ndcg@1_parsed, ndcg@1_strict} "
                        "(default: SWEEP_DIR/size_axis.json when present)")
    p.add_argument("--baseline", action="append", metavar="FILE",
                   help="a `listopd constrained` result to show as the constrained-decoding baseline; repeatable "
                        "(default: SWEEP_DIR/baselines/*.json)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: SWEEP_DIR/report)")
    p.add_argument("--onset-threshold", type=float, metavar="RATE",
                   help="onset rule of a sweep without a locked one: parse rate below RATE (a locked rule wins)")
    p.add_argument("--onset-drop", type=float, metavar="DROP",
                   help="…or lower than at the grid point below by more than DROP (with --onset-threshold)")


def run(args) -> int:
    from pathlib import Path

    from listopd.util.errors import ListopdError
    from listopd.experiment.report import build_report

    if not Path(args.sweep_dir).is_dir():
        raise ListopdError(f"sweep folder not found: {args.sweep_dir}")
    if args.onset_drop is not None and args.onset_threshold is None:
        raise ListopdError("--onset-drop needs --onset-threshold")
    onset = (args.onset_threshold, args.onset_drop) if args.onset_threshold is not None else None
    report = build_report(args.sweep_dir, args.out, calibration=args.calibration, size_axis=args.size_axis,
                          baselines=args.baseline, onset=onset)
    print(f"wrote {report}")
    return 0
