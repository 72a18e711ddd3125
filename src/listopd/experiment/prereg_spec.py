"""The `prereg:` section of a sweep YAML file: its keys, checked against the sweep's grid (`parse_spec`).

The section's format and the tests it registers are described in `listopd.experiment.prereg` (which locks and
checks them; docs/method.md#pre-registered-tests). This module only reads the section, so that
`listopd.experiment.sweep` can check it while loading a sweep without importing the lock and check code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from listopd.core.theory import LAMBDA_STAR_FORMS
from listopd.util.errors import ListopdError

TESTS = ("fine_grid", "budget_extension", "small_clip", "lr_invariance", "full_vocabulary_onset", "failure_role",
         "contract_aware")
OFF_BASE_AXES = ("lr", "contract_aware")  # grid keys whose off-base runs carry them in their points
CHECKS = ("rise_below_onset", "ndcg_flat")  # the paper's two observations, below the fine grid's onset
KEYS = ("calibration", "onset_threshold", "onset_drop", "lambda_star_form", "min_seeds_with_onset", *TESTS, *CHECKS)
TEST_KEYS = {"fine_grid": ("clip", "budget"), "budget_extension": ("clip", "budgets", "rule"),
             "small_clip": ("clip", "budget"), "full_vocabulary_onset": ("clip", "budget"),
             "failure_role": ("clip", "budget", "role", "source"),
             "contract_aware": ("clip", "budget", "ndcg_tolerance"),
             "lr_invariance": ("clip", "budget", "lr", "budget_at_lr", "rule"),
             "rise_below_onset": ("warm_start_rate", "source"), "ndcg_flat": ("tolerance",)}
RULES = ("median", "per_seed")


# ----------------------------------------------------------------------------------------- the section

@dataclass
class PreregSpec:
    calibration: str
    onset_threshold: float
    onset_drop: float | None
    lambda_star_form: str
    min_seeds_with_onset: int | None
    fine_grid: dict | None
    budget_extension: dict | None
    small_clip: dict | None
    lr_invariance: dict | None = None
    full_vocabulary_onset: dict | None = None
    failure_role: dict | None = None
    contract_aware: dict | None = None
    rise_below_onset: dict | None = None
    ndcg_flat: dict | None = None


def _number(value, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
        raise ListopdError(f"{where}: expected a number in ({lo:g}, {hi:g}]; got {value!r}")
    return float(value)


def _integer(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ListopdError(f"{where}: expected an integer ≥ 1; got {value!r}")
    return value


def on_axes(point: dict, axes: dict) -> bool:
    """The point lies on these off-base axes (e.g. {"lr": 1e-4}) and on the base for the others."""
    return all(point.get(k) == axes.get(k) for k in OFF_BASE_AXES)


def grid_series(points: list[dict], clip: float, budget: int, **axes) -> dict[int, list[float]]:
    """seed → λ list of the grid points at (c, T), on the base learning rate and objective unless `axes` names
    others (lr=…, contract_aware=True)."""
    out: dict[int, list[float]] = {}
    for p in points:
        if p["clip_strength"] == clip and p["steps"] == budget and on_axes(p, axes):
            out.setdefault(p["seed"], []).append(p["reward_scale"])
    return out


def _require_series(points, clip, budget, where: str, **axes) -> dict[int, list[float]]:
    series = grid_series(points, clip, budget, **axes)
    if not series:
        at = "".join(f" and {k} {v}" for k, v in axes.items())
        raise ListopdError(f"{where}: the grid has no runs with clip_strength {clip:g} and steps {budget}{at}")
    short = [s for s, lams in series.items() if len(lams) < 2]
    if short:
        raise ListopdError(f"{where}: seed(s) {short} at clip_strength {clip:g}, steps {budget} have fewer than "
                           f"two λ values: no onset bracket is possible")
    return series


def _check_keys(name: str, value, where: str) -> None:
    if not isinstance(value, dict):
        raise ListopdError(f"{where}: must be a mapping with keys {', '.join(TEST_KEYS[name])}")
    unknown = sorted(set(value) - set(TEST_KEYS[name]))
    if unknown:
        raise ListopdError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(TEST_KEYS[name])}")


def _parse_test(name: str, value, points: list[dict], where: str) -> dict:
    _check_keys(name, value, where)
    if "clip" not in value:
        raise ListopdError(f"{where}: 'clip' is required")
    clip = _number(value["clip"], f"{where}: clip", 1.0, math.inf)
    if name == "lr_invariance":
        return _parse_lr_test(value, clip, points, where)
    if name == "contract_aware":
        budget = _integer(value.get("budget"), f"{where}: budget")
        tolerance = _number(value.get("ndcg_tolerance"), f"{where}: ndcg_tolerance", 0.0, 1.0)
        _same_grid(_require_series(points, clip, budget, where),
                   _require_series(points, clip, budget, where, contract_aware=True), where, "contract-aware")
        return {"clip": clip, "budget": budget, "ndcg_tolerance": tolerance}
    if name == "failure_role":
        for key in ("role", "source"):
            if not isinstance(value.get(key), str) or not value[key]:
                raise ListopdError(f"{where}: '{key}' is required (the role the warm start's outputs fail at, "
                                   f"and how that was measured)")
        budget = _integer(value.get("budget"), f"{where}: budget")
        _require_series(points, clip, budget, where)
        return {"clip": clip, "budget": budget, "role": value["role"], "source": value["source"]}
    if name != "budget_extension":
        budget = _integer(value.get("budget"), f"{where}: budget")
        _require_series(points, clip, budget, where)
        return {"clip": clip, "budget": budget}
    budgets = value.get("budgets")
    if not isinstance(budgets, list) or len(budgets) != 2:
        raise ListopdError(f"{where}: budgets must be a list of two step budgets [T1, T2]; got {budgets!r}")
    t1, t2 = sorted(_integer(t, f"{where}: budgets") for t in budgets)
    if t1 == t2:
        raise ListopdError(f"{where}: the two budgets must differ; got {budgets!r}")
    rule = value.get("rule", "median")
    if rule not in RULES:
        raise ListopdError(f"{where}: rule must be one of {', '.join(RULES)}; got {rule!r}")
    s1 = _require_series(points, clip, t1, where)
    s2 = _require_series(points, clip, t2, where)
    if not set(s1) & set(s2):
        raise ListopdError(f"{where}: no seed is run at both budgets {t1} and {t2}")
    return {"clip": clip, "budgets": [t1, t2], "rule": rule}


def _parse_lr_test(value: dict, clip: float, points: list[dict], where: str) -> dict:
    budget = _integer(value.get("budget"), f"{where}: budget")
    lr = _number(value.get("lr"), f"{where}: lr", 0.0, math.inf)
    budget_at_lr = _integer(value.get("budget_at_lr"), f"{where}: budget_at_lr")
    rule = value.get("rule", "median")
    if rule not in RULES:
        raise ListopdError(f"{where}: rule must be one of {', '.join(RULES)}; got {rule!r}")
    _same_grid(_require_series(points, clip, budget, where),
               _require_series(points, clip, budget_at_lr, where, lr=lr), where, f"lr {lr:g}")
    return {"clip": clip, "budget": budget, "lr": lr, "budget_at_lr": budget_at_lr, "rule": rule}


def _same_grid(base: dict, other: dict, where: str, what: str) -> None:
    """The seeds run on both sides have the same λ grid on both (so that their brackets compare)."""
    seeds = sorted(set(base) & set(other))
    if not seeds:
        raise ListopdError(f"{where}: no seed is run both at the base and at {what}")
    for s in seeds:
        if sorted(base[s]) != sorted(other[s]):
            raise ListopdError(f"{where}: seed {s} has another λ grid at {what} than at the base: the brackets "
                               f"could not be compared")


def _parse_check(name: str, value, where: str) -> dict:
    _check_keys(name, value, where)
    if name == "ndcg_flat":
        return {"tolerance": _number(value.get("tolerance"), f"{where}: tolerance", 0.0, 1.0)}
    rate = value.get("warm_start_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ListopdError(f"{where}: warm_start_rate must be the warm start's measured rate in [0, 1); "
                           f"got {rate!r}")
    source = value.get("source")
    if not isinstance(source, str) or not source:
        raise ListopdError(f"{where}: source (how warm_start_rate was measured) is required")
    return {"warm_start_rate": float(rate), "source": source}


def parse_spec(section, runs, source: str = "prereg") -> PreregSpec:
    """Check a `prereg:` section against the sweep's runs (Run objects or their point dicts)."""
    points = [r if isinstance(r, dict) else r.point() for r in runs]
    if not isinstance(section, dict):
        raise ListopdError(f"{source}: must be a mapping")
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise ListopdError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(KEYS)}")
    calibration = section.get("calibration")
    if not isinstance(calibration, str) or not calibration:
        raise ListopdError(f"{source}: 'calibration' (the calibration.json to predict from) is required")
    if "onset_threshold" not in section:
        raise ListopdError(f"{source}: 'onset_threshold' is required (the onset definition is locked)")
    threshold = _number(section["onset_threshold"], f"{source}: onset_threshold", 0.0, 1.0)
    drop = section.get("onset_drop")
    drop = None if drop is None else _number(drop, f"{source}: onset_drop", 0.0, 1.0)
    form = section.get("lambda_star_form", "pb")
    if form not in LAMBDA_STAR_FORMS:
        raise ListopdError(f"{source}: lambda_star_form must be one of {', '.join(LAMBDA_STAR_FORMS)}; got {form!r}")
    min_seeds = section.get("min_seeds_with_onset")
    min_seeds = None if min_seeds is None else _integer(min_seeds, f"{source}: min_seeds_with_onset")
    tests = {name: _parse_test(name, section[name], points, f"{source}: {name}")
             for name in TESTS if section.get(name) is not None}
    if not tests:
        raise ListopdError(f"{source}: register at least one of the tests {', '.join(TESTS)}")
    checks = {name: _parse_check(name, section[name], f"{source}: {name}")
              for name in CHECKS if section.get(name) is not None}
    if checks and "fine_grid" not in tests:
        raise ListopdError(f"{source}: {', '.join(checks)} read the fine grid's onset: register fine_grid")
    if min_seeds is not None:
        for name in ("fine_grid", "small_clip", "full_vocabulary_onset", "failure_role"):
            if name in tests:
                n = len(grid_series(points, tests[name]["clip"], tests[name]["budget"]))
                if min_seeds > n:
                    raise ListopdError(f"{source}: min_seeds_with_onset {min_seeds} exceeds the {n} seed(s) "
                                       f"of {name}")
    return PreregSpec(calibration, threshold, drop, form, min_seeds, tests.get("fine_grid"),
                      tests.get("budget_extension"), tests.get("small_clip"), tests.get("lr_invariance"),
                      tests.get("full_vocabulary_onset"), tests.get("failure_role"), tests.get("contract_aware"),
                      checks.get("rise_below_onset"), checks.get("ndcg_flat"))
