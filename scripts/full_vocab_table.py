"""Issue 19's table from a calibration.json (`listopd calibrate --out`): per λ, the id role's and the key role's
contract-breaking tail of the full-vocabulary fixed point q_λ(y) ∝ π_T(y)^λ·π_B(y)^(1−λ), the id role's tail of
the lumped two-class fixed point q_λ(p_id, b_id) the closed form uses, and the predicted parse rate Π_t keep_t(λ)
along the calibration's valid outputs (mean over them, 95% bootstrap interval), uncapped and under base_ratio.

    .venv/bin/python scripts/full_vocab_table.py runs/demo/calibration/calibration.json [--lambdas 1 1.5 2 ...]

Prints a Markdown table; reads only.
"""

from __future__ import annotations

import argparse
import json


def table(cal: dict, lambdas: list[float]) -> str:
    from listopd.core import theory

    fv = cal["full_vocabulary"]
    grid = [float(x) for x in fv["lambdas"]]
    missing = [lam for lam in lambdas if lam not in grid]
    if missing:
        raise SystemExit(f"error: λ {missing} not in the calibration's grid {grid}")
    col = [grid.index(lam) for lam in lambdas]
    roles = cal["roles"]

    def cells(values, fmt="{:.1e}"):
        return " | ".join("—" if v is None else fmt.format(v) for v in values)

    def interval(ci):
        return "—" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"

    lines = [f"| λ | {' | '.join(f'{lam:g}' for lam in lambdas)} |", "|---" * (len(lambdas) + 1) + "|"]
    for role in ("id", "key"):
        if role in fv["role_tail"]:
            lines.append(f"| {role} role, tail of the full-vocabulary fixed point | "
                         f"{cells(fv['role_tail'][role][i] for i in col)} |")
    if "id" in roles:
        p, b = roles["id"]["p"], roles["id"]["b"]
        lines.append(f"| id role, tail of the lumped (two-class) fixed point | "
                     f"{cells(1 - float(theory.fixed_point(lam, p, b)) for lam in lambdas)} |")
    lines.append(f"| predicted parse Π_t keep_t (mean over {fv['n_outputs']} outputs) | "
                 f"{cells((fv['predicted_parse'][i] for i in col), '{:.2f}')} |")
    lines.append(f"| its 95% interval | {' | '.join(interval(fv['predicted_parse_ci'][i]) for i in col)} |")
    capped = fv.get("base_ratio_capped") or {}
    if capped.get("predicted_parse"):
        cgrid = [float(x) for x in capped["lambdas"]]
        lines.append(f"| predicted parse under base_ratio (c = {capped.get('c', cal.get('c'))}) | "
                     + cells((capped["predicted_parse"][cgrid.index(lam)] if lam in cgrid else None
                              for lam in lambdas), "{:.2f}") + " |")
    lines.append("")
    lines.append(f"Peak at λ = {fv['peak_lambda']}; first λ past it below the teacher's (λ = 1) value: "
                 f"{fv['onset_lambda']}. Closed form: binding role {cal['binding_role']}, "
                 f"λ*(p, b, {cal.get('c')}) = {cal['lambda_star']:.3f}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("calibration", help="calibration.json")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
    args = ap.parse_args(argv)
    with open(args.calibration, encoding="utf-8") as f:
        print(table(json.load(f), args.lambdas))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
