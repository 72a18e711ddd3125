"""The convergence curve of ListOPD runs: validation strict parse rate (and the rollouts') and teacher KL k3
against steps, with the teacher's own validation rate marked (issue 15 step 1: a recipe converges when the
student comes within 5 points of the teacher and the KL has plateaued).

    .venv/bin/python scripts/convergence_curve.py RUN [RUN ...] --teacher-rate 0.75 --out curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--teacher-rate", type=float, default=None, help="the teacher's validation strict parse rate")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for i, run in enumerate(a.runs):
        rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines() if x.strip()]
        summary = json.loads((Path(run) / "summary.json").read_text()) if (Path(run) / "summary.json").is_file() else {}
        label = Path(run).name
        evals = [(r["step"], r["val_strict_parse_rate"]) for r in rows if "val_strict_parse_rate" in r]
        if "val_strict_parse_rate" in summary:
            evals.append((summary["steps"], summary["val_strict_parse_rate"]))
        top.plot(*zip(*evals), marker="o", color=f"C{i}", label=f"{label}: validation (sampled)")
        window = 10
        roll = [r["rollout_parse_rate"] for r in rows]
        smooth = [sum(roll[max(0, j - window + 1):j + 1]) / len(roll[max(0, j - window + 1):j + 1]) for j in range(len(roll))]
        top.plot([r["step"] for r in rows], smooth, color=f"C{i}", alpha=0.4, lw=1, label=f"{label}: rollouts ({window}-step mean)")
        bottom.semilogy([r["step"] for r in rows], [max(r["teacher_kl_k3"], 1e-6) for r in rows], color=f"C{i}", lw=0.8)
    if a.teacher_rate is not None:
        top.axhline(a.teacher_rate, color="black", ls="--", lw=1, label=f"teacher {a.teacher_rate:.2f}")
        top.axhspan(a.teacher_rate - 0.05, a.teacher_rate, color="gray", alpha=0.15, label="within 5 points")
    top.set_ylabel("strict parse rate")
    top.set_ylim(0, 1)
    top.legend(fontsize=7)
    top.grid(alpha=0.3)
    bottom.set_ylabel("teacher KL k3 (rollouts)")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
