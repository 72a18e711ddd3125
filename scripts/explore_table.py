"""The exploratory study's one table (issue 15 step 5): every arm under a sweep folder's parent, one row per run,
and the onset of each arm by a stated rule.

    python scripts/explore_table.py runs/round2_explore [--threshold 0.5] [--drop 0.2] > table.md

An arm is a sweep folder holding results/*.json (`listopd sweep` writes one per finished run). Per run: λ, final
validation strict parse (sampled), its lowest value over the run's evaluations, the share of training steps
whose rollouts parsed 0 times in 16, NDCG@1 parsed, the teacher KL k3 over the last 50 steps, and minutes of
training (finished runs). Unfinished runs (a run folder without a result) are listed as running, with their
last evaluation.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from listopd.core.onset import find_onset, onset_definition


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _row(lam: float, records: list[dict], summary: dict | None, train_seconds: float | None = None) -> dict:
    evals = [r["val_strict_parse_rate"] for r in records if "val_strict_parse_rate" in r]
    steps = [r for r in records if "rollout_parse_rate" in r]
    tail = [r["teacher_kl_k3"] for r in steps[-50:] if "teacher_kl_k3" in r]
    return {
        "lam": lam,
        "final": summary.get("val_strict_parse_rate") if summary else None,
        "last_eval": evals[-1] if evals else None,
        "min_eval": min(evals + ([summary["val_strict_parse_rate"]] if summary else [])) if evals or summary else None,
        "zero_steps": sum(r["rollout_parse_rate"] == 0 for r in steps) / len(steps) if steps else None,
        "ndcg": summary.get("val_ndcg@1_parsed") if summary else None,
        "kl_tail": statistics.fmean(tail) if tail else None,
        "minutes": train_seconds / 60 if train_seconds else None,
        "steps": summary.get("steps") if summary else (steps[-1]["step"] if steps else 0),
    }


def arm_rows(arm: Path) -> tuple[dict, list[dict]]:
    rows, config = [], {}
    for result in sorted((arm / "results").glob("*.json")):
        record = json.loads(result.read_text())
        config = record["config"]
        rows.append(_row(record["config"]["reward_scale"], _metrics(arm / "runs" / record["name"]),
                         record["summary"], record.get("train_seconds")))
    finished = {r["lam"] for r in rows}
    for run_dir in sorted((arm / "runs").glob("*")) if (arm / "runs").is_dir() else []:
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            continue
        cfg = json.loads(cfg_path.read_text())
        config = config or cfg
        if cfg["reward_scale"] not in finished:
            rows.append(_row(cfg["reward_scale"], _metrics(run_dir), None))
    return config, sorted(rows, key=lambda r: r["lam"])


def _f(x, fmt="{:.2f}"):
    return "—" if x is None else fmt.format(x)


def table(root: Path, threshold: float, drop: float | None) -> str:
    lines = [f"Onset rule: {onset_definition(threshold, drop)}.", "",
             "| arm | estimator | lr | clip mode | steps | λ | final parse | lowest eval | steps at rollout parse 0 "
             "| NDCG@1 parsed | teacher KL k3 (last 50) | minutes | arm onset |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm in sorted(p for p in root.iterdir() if (p / "results").is_dir() or (p / "runs").is_dir()):
        config, rows = arm_rows(arm)
        if not rows:
            continue
        onset = find_onset([r["lam"] for r in rows], [r["final"] for r in rows], threshold, drop)
        if onset.complete and onset.lam is None:
            verdict = "none on the grid"
        elif onset.complete:
            verdict = f"({_f(onset.lower, '{:g}')}, {onset.lam:g}] ({onset.rule})"
        else:
            verdict = "undetermined (runs missing)"
        for i, r in enumerate(rows):
            final = (_f(r["final"]) if r["final"] is not None else
                     f"running (step {r['steps']}, last eval {_f(r['last_eval'])})")
            lines.append(
                f"| {arm.name if i == 0 else ''} | {config.get('estimator', '') if i == 0 else ''} "
                f"| {config.get('lr', '') if i == 0 else ''} | {config.get('clip_mode', '') if i == 0 else ''} "
                f"| {config.get('steps', '') if i == 0 else ''} | {r['lam']:g} | {final} | {_f(r['min_eval'])} "
                f"| {_f(r['zero_steps'], '{:.0%}')} | {_f(r['ndcg'])} | {_f(r['kl_tail'], '{:.3f}')} "
                f"| {_f(r['minutes'], '{:.0f}')} | {verdict if i == 0 else ''} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="folder whose sub-folders are sweep outputs (arms)")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--drop", type=float, default=0.2)
    args = ap.parse_args()
    print(table(args.root, args.threshold, args.drop))


if __name__ == "__main__":
    main()
