"""The onset rule for λ sweeps (docs/method.md#the-onset-rule-for-sweeps): the one definition used by
`listopd sweep`, `listopd prereg` and `listopd report`. Pure: no files, no torch, no models.

For one (c, T, seed) series with grid λ_1 < … < λ_n, the onset is the smallest λ_i whose final validation
strict parse rate is below `threshold`, or (when `drop` is not None, i ≥ 2) is lower than the rate at λ_{i−1}
by more than `drop`. Its bracket is (λ_{i−1}, λ_i] (no lower end when i = 1). None when no grid point
collapses. The cliff interval of several seeds is the union of their brackets, [min λ_{i−1}, max λ_i] over
the seeds with an onset (`union_bracket`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from listopd.util.errors import ListopdError


@dataclass
class Onset:
    """The onset of one (c, T, seed) series. `lam` is λ_i (None: no collapse on the grid, or undetermined
    when `complete` is False); `lower` is λ_{i−1} (None when λ_i is the lowest grid point); `rule` says
    which rule fired ("threshold" is checked first, then "drop")."""
    lam: float | None
    lower: float | None
    rule: str | None
    complete: bool = True

    def bracket(self) -> tuple[float | None, float | None]:
        return self.lower, self.lam


def find_onset(lambdas: list[float], rates: list[float | None], threshold: float,
               drop: float | None = None) -> Onset:
    """The onset of one series: the smallest λ_i (grid sorted ascending here) whose strict parse rate is
    below `threshold`, or, when `drop` is not None and i ≥ 2, lower than the rate at λ_{i−1} by more than
    `drop`. Bracket (λ_{i−1}, λ_i]. A rate of None is a missing result: the scan stops there, since the
    onset can then be anywhere from that point up (complete=False, lam=None). No collapse: lam=None."""
    pairs = sorted(zip(lambdas, rates), key=lambda x: x[0])
    previous_lam, previous_rate = None, None
    for lam, rate in pairs:
        if rate is None:
            return Onset(None, None, None, complete=False)
        rule = None
        if rate < threshold:
            rule = "threshold"
        elif drop is not None and previous_rate is not None and previous_rate - rate > drop:
            rule = "drop"
        if rule:
            return Onset(lam, previous_lam, rule)
        previous_lam, previous_rate = lam, rate
    return Onset(None, None, None)


def onset_definition(threshold: float, drop: float | None) -> str:
    """The rule written out as text (locked in prereg.json, shown by `prereg check` and the report)."""
    text = f"smallest grid λ whose final validation strict parse rate is < {threshold:g}"
    if drop is not None:
        text += f", or lower than at the grid point below by more than {drop:g}"
    return text + "; bracket (λ_{i−1}, λ_i]; none when no grid point collapses"


def onset_table(points: list[dict], rates: dict[str, float | None], threshold: float,
                drop: float | None = None) -> dict[tuple[float, int, int], Onset]:
    """(c, T, seed) → Onset, for grid points given as dicts with name, reward_scale, clip_strength, steps,
    seed (a sweep Run's point(), or the plan in sweep.json / prereg.json); `rates` is name → rate."""
    series: dict[tuple, list[dict]] = {}
    for p in points:
        series.setdefault((p["clip_strength"], p["steps"], p["seed"]), []).append(p)
    return {key: find_onset([p["reward_scale"] for p in pts], [rates.get(p["name"]) for p in pts],
                            threshold, drop)
            for key, pts in series.items()}


def union_bracket(onsets) -> tuple[float | None, float] | None:
    """The union of the brackets of the onsets that found one, [min λ_(i−1), max λ_i] (the cliff interval
    over seeds, as in pre-registered test 1); the lower end is None when some onset is at the lowest grid
    point; None when no onset found one."""
    found = [o for o in onsets if o.lam is not None]
    if not found:
        return None
    lo = None if any(o.lower is None for o in found) else min(o.lower for o in found)
    return lo, max(o.lam for o in found)


def grid_step(lambdas: list[float]) -> float:
    """The grid step of a λ list: the median gap between consecutive distinct values (exact for a
    uniform grid)."""
    values = sorted(set(lambdas))
    if len(values) < 2:
        raise ListopdError("a λ grid needs at least two values to have a step")
    return float(statistics.median(b - a for a, b in zip(values, values[1:])))
