"""Print the Markdown table of docs/simulator.md from the JSON results of scripts/simulator_study.sh."""

import json
import sys
from pathlib import Path

rows = ["| run | clip mode | dynamics | budget | c | λ*(p,b,c) | first grid λ > λ* | onset per seed |",
        "|---|---|---|---|---|---|---|---|"]
for path in sys.argv[1:]:
    for r in json.loads(Path(path).read_text())["results"]:
        cfg = r["config"]
        per_seed = ", ".join("none" if o is None else f"{o:g}" for o in r["onsets"])
        above = [row["lambda"] for row in r["rows"] if row["lambda"] > r["lambda_star"]]
        first_above = f"{above[0]:g}" if above else "beyond grid"
        run = f"p={cfg['p']}, b={cfg['b']}" + (f", modal {cfg['n_modal']}/tail {cfg['n_tail']}"
                                                 if cfg["n_modal"] > 1 else "")
        dyn = cfg["dynamics"] + f" ({cfg['optimizer']} lr {cfg['lr']:g}" + (
            f", {cfg['samples_per_step']} samples/step, {cfg['seeds']} seeds)" if cfg["dynamics"] == "sampled" else ")")
        rows.append(f"| {run} | {cfg['clip_mode']} | {dyn} | {cfg['steps']} | {cfg['c']:g} | "
                    f"{r['lambda_star']:.4f} | {first_above} | {per_seed} |")
print("\n".join(rows))
