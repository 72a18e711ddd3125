"""The mechanism figure of a sweep: each run's tail mass per structural role over training (the trainer's
`keep/<role>` records, train/role_mass.py) against the fixed point the closed form is about, q_λ(p_role, b_role),
and the clip-safe boundary (1 − p_role)/c, with p_role and b_role from the calibration file.

Below λ* the closed form expects the tail to settle at q_λ's; above it, the lumped two-class dynamics run the tail
to zero (docs/method.md#the-fixed-point-each-mode-implies). A tail that instead grows is a collapse that
mechanism does not explain. Used by `listopd report` (experiment/report.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from listopd.core import theory

MECHANISM_FIGURE = "mechanism.png"
ID_SLOTS_FIGURE = "id_slots.png"


def trajectories(sweep_dir: Path, name: str) -> list[tuple[int, dict[str, float]]]:
    """[(step, {role: keeping mass})] of one sweep run, from OUT/runs/NAME/metrics.jsonl and its summary."""
    return run_trajectory(Path(sweep_dir) / "runs" / name)


def run_trajectory(run: Path) -> list[tuple[int, dict[str, float]]]:
    """[(step, {role: keeping mass})] of one ListOPD run folder, from its metrics.jsonl and summary.json."""
    run = Path(run)
    out = []
    log = run / "metrics.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            keep = {k[5:]: v for k, v in row.items() if k.startswith("keep/") and isinstance(v, (int, float))}
            if keep:
                out.append((int(row["step"]), keep))
    summary = run / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text(encoding="utf-8"))
        keep = {k[5:]: v for k, v in data.items() if k.startswith("keep/") and isinstance(v, (int, float))}
        if keep:
            out.append((int(data.get("steps", out[-1][0] + 1 if out else 0)), keep))
    return out


def pick_roles(calibration: dict, available: set[str], n: int = 4) -> list[str]:
    """The binding role, then the last id slot, quote and eos: the roles where the theory binds and where
    round 1's students failed."""
    roles = calibration.get("roles") or {}
    ids = sorted((r for r in roles if r.startswith("id_")), key=lambda r: int(r[3:]))
    wanted = [calibration.get("binding_role"), ids[-1] if ids else None, "quote", "eos", "key"]
    out = []
    for r in wanted:
        if r and r in available and r in roles and r not in out:
            out.append(r)
    return out[:n]


def plot_mechanism(series: dict[str, tuple[float, list]], calibration: dict, c: float, path: Path,
                   lambda_star: float | None) -> list[str]:
    """series: run label -> (λ, trajectory). Draws one panel per role; returns the roles drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    available = {r for _, traj in series.values() for _, keep in traj for r in keep}
    roles = pick_roles(calibration, available)
    if not roles:
        return []
    colour = lambda_colours(plt, series)
    fig, axes = plt.subplots(1, len(roles), figsize=(4.2 * len(roles), 3.8), squeeze=False)
    for ax, role in zip(axes[0], roles):
        p, b = float(calibration["roles"][role]["p"]), float(calibration["roles"][role]["b"])
        for label, (lam, traj) in sorted(series.items(), key=lambda kv: kv[1][0]):
            pts = [(s, 1 - keep[role]) for s, keep in traj if role in keep]
            if pts:
                ax.plot(*zip(*pts), color=colour[lam], marker=".", lw=1.2, label=f"λ = {lam:g}")
            if 0 < p < 1 and 0 < b < 1:
                ax.axhline(1 - float(theory.fixed_point(lam, p, b)), color=colour[lam], ls="--", lw=0.8)
        ax.axhline((1 - p) / c, color="black", ls=":", lw=1.2, label="clip-safe boundary (1−p)/c")
        ax.axhline(1 - p, color="gray", lw=0.8, label="teacher tail 1−p")
        ax.axhline(1 - b, color="gray", ls="-.", lw=0.8, label="warm-start tail 1−b")
        ax.set_yscale("log")
        lam_role = theory.lambda_star_or_none(p, b, c)
        star = "∞" if lam_role is None or math.isinf(lam_role) else f"{lam_role:.3f}"
        ax.set_title(f"{role}: p = {p:.4g}, b = {b:.4g}, λ*_role = {star}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("tail mass 1 − keep (log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    title = "student's tail per role (solid) vs q_λ's tail (dashed, same colour)"
    fig.suptitle(title + (f"; predicted λ* = {lambda_star:.3f}" if lambda_star else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return roles


def id_slots(series: dict[str, tuple[float, list]]) -> list[str]:
    """The per-slot id roles (id_1, id_2, ...) logged by any run of `series`, in slot order."""
    logged = {r for _, traj in series.values() for _, keep in traj for r in keep}
    return sorted((r for r in logged if r.startswith("id_") and r[3:].isdigit()), key=lambda r: int(r[3:]))


def lambda_colours(plt, series: dict[str, tuple[float, list]]) -> dict:
    """One colour per λ of `series`, from viridis, in λ order (the mechanism and id-slot figures share it)."""
    lams = sorted({lam for lam, _ in series.values()})
    return {lam: plt.cm.viridis(i / max(1, len(lams) - 1)) for i, lam in enumerate(lams)}


def plot_id_slots(series: dict[str, tuple[float, list]], path: Path, seeds: dict[str, int] | None = None) -> list[str]:
    """One panel per id slot: each run's tail mass at that slot over training (series as in plot_mechanism;
    `seeds`, run label -> seed, gives each seed its own line style: colour is λ).
    A tail that stays flat at k/n of the probe tasks is a student certain of a wrong token on k of them: the
    expected estimator's push back is q(right)·(A − Ā), nothing at q ≈ 0 (a trap, not a rest point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slots = id_slots(series)
    if not slots:
        return []
    colour = lambda_colours(plt, series)
    seeds = seeds or {}
    styles = {s: ("-", "--", ":", "-.")[i % 4] for i, s in enumerate(sorted(set(seeds.values())))}
    cols = min(4, len(slots))
    rows = math.ceil(len(slots) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False, sharey=True)
    floor = 1e-4  # a tail of exactly 0 still gets a point on the log axis
    for ax, slot in zip(axes.flat, slots):
        for label, (lam, traj) in sorted(series.items(), key=lambda kv: kv[1][0]):
            pts = [(s, max(floor, 1 - keep[slot])) for s, keep in traj if slot in keep]
            if pts:
                seed = seeds.get(label)
                ax.plot(*zip(*pts), color=colour[lam], marker=".", lw=1.2, ls=styles.get(seed, "-"),
                        label=f"λ = {lam:g}" + ("" if seed is None or len(styles) < 2 else f", seed {seed}"))
        ax.set_yscale("log")
        ax.set_ylim(floor / 2, 1.5)
        ax.set_title(f"id slot {slot[3:]}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[len(slots):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for row in axes:
        row[0].set_ylabel("tail mass 1 − keep")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"student's tail mass at each id slot (floor {floor:g}); flat at k/n = stuck on k of n probe tasks",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return slots


def id_slot_table(series: dict[str, tuple[float, list]]) -> list[str]:
    """Markdown rows: each run's tail mass per id slot at its last evaluation."""
    slots = id_slots(series)
    if not slots:
        return []
    lines = ["| run | λ | step | " + " | ".join(s[3:] for s in slots) + " |",
             "|---|---|---|" + "---|" * len(slots)]
    for label, (lam, traj) in sorted(series.items(), key=lambda kv: (kv[1][0], kv[0])):
        step, keep = traj[-1]
        cells = [f"{1 - keep[s]:.3f}" if s in keep else "—" for s in slots]
        lines.append(f"| {label} | {lam:g} | {step} | " + " | ".join(cells) + " |")
    return lines


def group_title(c: float, budget: int, variant: str = "") -> str:
    """A (c, budget, variant) group's name in the report's titles, tables and this section."""
    return f"c = {c:g}, budget {budget} steps" + (f", {variant}" if variant else "")


def section_mechanism(sweep_dir: Path, runs, calibration: dict | None, out_dir: Path,
                      lambda_star: float | None) -> list[str]:
    """The report's mechanism section (the lowest seed of the most common (c, budget, variant) group, the base's
    first when groups tie, or nothing to draw; the id-slot figure and table take every seed of that group)."""
    lines = ["## Mechanism: tail mass per role during training", ""]
    if not calibration or not calibration.get("roles"):
        return lines + ["No calibration file with per-role p and b: nothing to compare the trajectories with.", ""]
    every_seed, seeds = {}, {}  # (c, budget, variant) -> {run: (λ, trajectory)}; run -> seed
    for r in runs:
        traj = trajectories(sweep_dir, r.name)
        if traj:
            every_seed.setdefault((r.c, r.budget, r.variant), {})[r.name] = (r.lam, traj)
            seeds[r.name] = r.seed
    first_seed = min((r.seed for r in runs), default=None)
    series = {key: first for key, group in every_seed.items()
              if (first := {name: v for name, v in group.items() if seeds[name] == first_seed})}
    if not series:
        return lines + ["No run logged per-role keeping mass (`keep/<role>`; OPD option role_probe_tasks).", ""]
    (c, budget, variant), chosen = max(series.items(), key=lambda kv: (len(kv[1]), kv[0][2] == ""))
    roles = plot_mechanism(chosen, calibration, c, out_dir / MECHANISM_FIGURE, lambda_star)
    if not roles:
        return lines + ["The logged roles do not match the calibration's roles.", ""]
    lines += [f"{group_title(c, budget, variant)}, one seed; roles: {', '.join(roles)}. Solid: the student's "
              "tail mass on validation prefixes at each evaluation; dashed: the tail of the fixed point "
              "q_λ(p_role, b_role) for that run's λ; dotted: the clip-safe boundary.", "",
              f"![tail mass per role]({MECHANISM_FIGURE})", ""]
    all_runs = every_seed[(c, budget, variant)]  # the id slots: every seed of the group (a trap differs by seed)
    if plot_id_slots(all_runs, out_dir / ID_SLOTS_FIGURE, seeds):
        lines += ["### The id slots one by one", "",
                  "Each id slot's tail mass: the student's probability of a next token there that breaks the "
                  "contract, averaged over the n probe prefixes. A student near-certain on every prefix averages "
                  "k/n, k the prefixes where it is certain of a wrong token; a tail that stays flat at such a value "
                  "is a trap, which the expected estimator leaves only at the speed of the right token's mass — "
                  "not a rest point.", "",
                  f"![tail mass per id slot]({ID_SLOTS_FIGURE})", "", "Tail mass per id slot at each run's last "
                  f"evaluation ({group_title(c, budget, variant)}, every seed):", ""] + id_slot_table(all_runs) + [""]
    return lines
