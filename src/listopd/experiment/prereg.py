"""Pre-registered tests of the closed-form cliff λ* against a λ sweep (docs/method.md#pre-registered-tests).

`listopd prereg lock SWEEP.yaml` writes OUT/prereg.json before any run of the sweep exists; `listopd prereg
check SWEEP.yaml` evaluates the locked predictions on the finished runs and writes OUT/prereg_result.json.

The `prereg:` section of the sweep YAML (read and checked by `listopd.experiment.prereg_spec.parse_spec`;
the tests are optional, at least one is required; the checks need fine_grid):

    prereg:
      calibration: runs/calibration/calibration.json  # `listopd calibrate` output: top-level p and b
      onset_threshold: 0.5         # onset: final validation strict parse rate below this …
      onset_drop: 0.3              # … or lower than at the grid point below by more than this (null: off)
      lambda_star_form: pb         # pb: λ*(p, b, c) (default); base_neutral: λ*(p, c) = λ*(p, 1/2, c)
      min_seeds_with_onset: null   # seeds that must show an onset in tests 1 and 3 (null: all of them)
      fine_grid: {clip: 5, budget: 200}                                  # test 1
      budget_extension: {clip: 5, budgets: [200, 800], rule: median}    # test 2 (rule: median | per_seed)
      small_clip: {clip: 2, budget: 200}                                 # test 3
      lr_invariance: {clip: 5, budget: 300, lr: 1.0e-4, budget_at_lr: 900, rule: median}   # test 4
      full_vocabulary_onset: {clip: 5, budget: 300}                      # test 5
      rise_below_onset: {warm_start_rate: 0.20, source: "how it was measured"}  # check A
      ndcg_flat: {tolerance: 0.1}                                        # check B

Each test selects the grid points with its clip strength c and budget(s) T from the sweep grid (the union of
its blocks), so each test can have its own λ list and seeds. For one (c, T, seed) the onset and its bracket
(λ_{i−1}, λ_i] are `listopd.core.onset.find_onset` (threshold and drop rules above). The grid step h of a test
is `listopd.core.onset.grid_step` of its λ list (the median gap; exact for a uniform grid). λ* below is the
locked prediction λ*(p, b, c) (or λ*(p, c) with lambda_star_form: base_neutral) from the calibrated p, b.

Locked predictions:
  (1) fine_grid, at (c, T): at least `min_seeds_with_onset` of the seeds show an onset, and the union of
      their brackets, the closed interval [min over seeds of λ_{i−1}, max over seeds of λ_i], contains λ*.
  (2) budget_extension, at c with budgets T1 < T2, over the seeds run at both: with rule "median", the
      lower median over seeds of the onset at T2 is ≤ that at T1 and ≥ λ* − h (h: the grid step at T2);
      with rule "per_seed", the same holds for every seed. No onset on the grid counts as +∞ (it lies
      above the grid), so an onset at T2 must exist. (The simulator's finding: a finite budget shifts the
      onset up, and it approaches λ* from above as the budget grows.)
  (3) small_clip, at the smaller (c, T): the seeds' union bracket (as in 1) contains λ*(c) within one grid
      step, i.e. it intersects the window [λ* − h, λ* + h].
  (4) lr_invariance, at c: the grid's runs at learning rate `lr` (a grid block with `lr:`; their points carry
      it) and budget `budget_at_lr` against the base learning rate's at `budget`, same λ grid, the seeds run
      at both: with rule "median" the lower median over seeds of the onset is the same grid point at both
      learning rates ("per_seed": for every seed); no onset on the grid counts as +∞. No λ* in it: the closed
      form describes a fixed point, which the learning rate cannot move.
  (5) full_vocabulary_onset, at (c, T): test 1's rule with the calibration's full-vocabulary onset (the first
      λ past the peak where Π_t keep_t(λ) falls below the teacher's) in place of λ*: the second predictor,
      tested on the same runs, so that the two can be compared.
  (6) failure_role {clip, budget, role, source}: test 1's rule with λ*(p, b, c) of the named role (its p and b
      from the calibration's role table) — the role where the warm start's own outputs fail (measured before
      the lock; `source` says how), recorded beside the binding role so the lock says which one predicts.
  (7) contract_aware {clip, budget, ndcg_tolerance} (issue 19 step 3b): the grid's runs with contract_aware
      (a grid block with `contract_aware: true`) against the plain ones on the same λ grid and seeds: the
      lower-median onset is above plain's (or none on the grid), the best seed-mean strict parse rate over λ is
      ≥ plain's best, and the seed-mean NDCG@1 parsed at that λ ≥ plain's at its best λ − ndcg_tolerance.
The paper's two observations, as locked checks over the fine grid's λ below the lowest seed's onset (the whole
grid when no seed has an onset), from seed means per λ:
  (A) rise_below_onset: the final strict parse rate is above the warm start's (`warm_start_rate`, measured
      before the lock; `source` says how) at every such λ;
  (B) ndcg_flat: the final NDCG@1 parsed varies by at most `tolerance` (max − min) across them.
Tests 1–3 and the checks read the base learning rate's points only.
In tests 1 and 3 an onset at the lowest grid point (no lower bracket end) fails the test: the grid did not
resolve that onset. Seeds whose onset is undetermined (a missing result below any onset, --partial only)
make a test "incomplete".

Lock refuses when any run folder or result file already exists, when the calibration has no (p, b), and when
a test's grid cannot possibly pass (λ* or the window outside the test's λ range). prereg.json holds the
calibration (p, b, its file's sha256), λ*(p, b, c) and λ*(p, c) for every clip in the grid, the onset
definition, the grid (every run with λ, c, T, seed), seeds, budgets, every test's points, prediction and
window, the sweep config and its hash, the UTC lock time, and `content_sha256` over all of that.

Check refuses (ListopdError: one line, exit 2) when prereg.json is missing, its content hash does not match
(it was edited), the sweep config differs from the locked one, a result was made under another config, any
run started before the lock (late lock), or runs have no result yet (unless `partial`). Otherwise it returns
each test's status (pass / fail / incomplete) with the numbers behind it.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from datetime import timezone
from pathlib import Path

from listopd.core import theory
from listopd.core.onset import Onset, grid_step, onset_definition, onset_table, union_bracket
from listopd.util.errors import InputError, ListopdError
from listopd.experiment.prereg_spec import TESTS, PreregSpec, grid_series, on_axes
from listopd.experiment.sweep import Sweep, parse_time, read_json, result_rates, sha256_of, utc_now

PREREG_VERSION = 1


class PreregRefusal(ListopdError):
    """check or lock will not proceed; the message says why in one line."""


# ------------------------------------------------------------------------------------------------ lock

def read_calibration(path: str) -> dict:
    """p, b and the context of a calibration.json (refuses one without a binding role)."""
    from listopd.train.cliff import read_calibration_file

    data = read_calibration_file(path)
    p, b = data["p"], data["b"]
    data_bytes = Path(path).read_bytes()
    # the role where the warm start's own outputs fail most ("duplicate_id@id_4" → id_4), recorded beside the
    # binding (smallest-λ*) role; the binding role's λ* is the one the tests hold to account
    failures = data.get("failure_roles") or {}
    worst = max(failures, key=failures.get) if failures else None
    failure_role = None if worst in (None, "ok") else worst.split("@")[-1] if "@" in worst else worst
    failure_row = (data.get("roles") or {}).get(failure_role) or {}
    full_vocabulary = data.get("full_vocabulary") or {}
    return {"path": path, "sha256": hashlib.sha256(data_bytes).hexdigest(), "p": float(p), "b": float(b),
            "roles": {r: {"p": v.get("p"), "b": v.get("b")} for r, v in (data.get("roles") or {}).items()},
            "c": data.get("c"), "lambda_star": data.get("lambda_star"),
            "lambda_star_ci": data.get("lambda_star_ci"), "binding_role": data.get("binding_role"),
            "predicting_role": "binding_role", "failure_role": failure_role, "failure": worst,
            "failure_role_lambda_star": failure_row.get("lambda_star"),
            "full_vocabulary_onset": full_vocabulary.get("onset_lambda"),
            "full_vocabulary_peak": full_vocabulary.get("peak_lambda")}


def _lambda_stars(p: float, b: float, c: float) -> dict:
    """Both closed forms at c as prereg.json writes them: null for λ* = +∞ (b ≥ p); an argument outside the
    domain refuses the lock with the DomainError."""
    def one(form):
        return theory.lambda_star_or_none(p, b, c, form=form, no_cliff=None, strict=True)

    return {"c": c, "lambda_star_pb": one("pb"), "lambda_star_base_neutral": one("base_neutral")}


def existing_runs(out: Path) -> list[Path]:
    """Run folders under OUT/runs and result files under OUT/results."""
    found = []
    if (out / "runs").is_dir():
        found += sorted((out / "runs").iterdir())
    if (out / "results").is_dir():
        found += sorted((out / "results").glob("*.json"))
    return found


def _test_points(points, clip, budgets, **axes) -> list[dict]:
    """The grid points at clip c and a budget in `budgets`, on the base unless `axes` names other values of
    the off-base axes (lr=…, contract_aware=True)."""
    return [p for p in points if p["clip_strength"] == clip and p["steps"] in budgets and on_axes(p, axes)]


def _bracket_test(name: str, test: dict, points: list[dict], lam_star: float, min_seeds: int | None,
                  where: str) -> dict:
    """The locked form of test 1 (fine_grid) or 3 (small_clip)."""
    clip, budget = test["clip"], test["budget"]
    chosen = _test_points(points, clip, [budget])
    lambdas = sorted({p["reward_scale"] for p in chosen})
    seeds = sorted({p["seed"] for p in chosen})
    need = min_seeds or len(seeds)
    h = grid_step(lambdas)
    if name in ("fine_grid", "full_vocabulary_onset", "failure_role"):
        window = [lam_star, lam_star]
        reachable = lambdas[0] <= lam_star <= lambdas[-1]
        what = {"full_vocabulary_onset": "the full-vocabulary onset",
                "failure_role": f"the role {test.get('role')}'s λ*"}.get(name, "λ*")
        prediction = (f"at c = {clip:g}, T = {budget}: at least {need} of {len(seeds)} seeds show an onset and the "
                      f"union of their brackets [min λ_(i−1), max λ_i] contains {what} = {lam_star:.6g}")
    else:
        window = [lam_star - h, lam_star + h]
        reachable = window[0] <= lambdas[-1] and window[1] >= lambdas[0]
        prediction = (f"at c = {clip:g}, T = {budget}: at least {need} of {len(seeds)} seeds show an onset and the "
                      f"union of their brackets intersects [λ* − h, λ* + h] = [{window[0]:.6g}, {window[1]:.6g}] "
                      f"(λ* = {lam_star:.6g}, grid step h = {h:.6g})")
    if not reachable:
        raise PreregRefusal(f"{where}: the λ grid [{lambdas[0]:g}, {lambdas[-1]:g}] at c = {clip:g}, T = {budget} "
                            f"cannot pass: the prediction window is [{window[0]:.6g}, {window[1]:.6g}]")
    return {"clip": clip, "budget": budget, "lambda_star": lam_star, "grid_step": h, "window": window,
            "lambdas": lambdas, "seeds": seeds, "min_seeds_with_onset": need,
            "unresolved_lowest_onset": "fails the test", "prediction": prediction, "points": chosen}


def _budget_test(test: dict, points: list[dict], lam_star: float, where: str) -> dict:
    """The locked form of test 2 (budget_extension)."""
    clip, (t1, t2), rule = test["clip"], test["budgets"], test["rule"]
    seeds = sorted(set(grid_series(points, clip, t1)) & set(grid_series(points, clip, t2)))
    chosen = [p for p in _test_points(points, clip, [t1, t2]) if p["seed"] in seeds]
    lambdas2 = sorted({p["reward_scale"] for p in chosen if p["steps"] == t2})
    h = grid_step(lambdas2)
    lower = lam_star - h
    if lower > lambdas2[-1]:
        raise PreregRefusal(f"{where}: the λ grid at T2 = {t2} ends at {lambdas2[-1]:g}, "
                            f"below λ* − h = {lower:.6g}")
    who = "the lower median over seeds of the onset" if rule == "median" else "for every seed, the onset"
    prediction = (f"at c = {clip:g}: {who} at T2 = {t2} is ≤ the one at T1 = {t1} and ≥ λ* − h = {lower:.6g} "
                  f"(λ* = {lam_star:.6g}, grid step at T2 h = {h:.6g}); no onset on the grid counts as +∞")
    return {"clip": clip, "budgets": [t1, t2], "rule": rule, "lambda_star": lam_star, "grid_step": h,
            "window": [lower, None], "seeds": seeds,
            "lambdas": {str(t): sorted({p["reward_scale"] for p in chosen if p["steps"] == t}) for t in (t1, t2)},
            "prediction": prediction, "points": chosen}


def _lr_test(test: dict, points: list[dict]) -> dict:
    """The locked form of test 4 (lr_invariance): no λ* in it — the closed form describes a fixed point, which
    the learning rate cannot move, so the onset must not move with it either."""
    clip, budget, lr, budget_at_lr, rule = (test[k] for k in ("clip", "budget", "lr", "budget_at_lr", "rule"))
    seeds = sorted(set(grid_series(points, clip, budget)) & set(grid_series(points, clip, budget_at_lr, lr=lr)))
    base = [p for p in _test_points(points, clip, [budget]) if p["seed"] in seeds]
    other = [p for p in _test_points(points, clip, [budget_at_lr], lr=lr) if p["seed"] in seeds]
    who = "the lower median over seeds of the onset" if rule == "median" else "every seed's onset"
    prediction = (f"at c = {clip:g}: {who} at lr = {lr:g}, T = {budget_at_lr} lies in the same grid bracket as at "
                  f"the base learning rate, T = {budget} (no onset on the grid counts as one bracket above it)")
    return {"clip": clip, "budget": budget, "lr": lr, "budget_at_lr": budget_at_lr, "rule": rule, "seeds": seeds,
            "lambdas": sorted({p["reward_scale"] for p in base}), "prediction": prediction, "points": base,
            "points_at_lr": other}


def _aware_test(test: dict, points: list[dict]) -> dict:
    """The locked form of test 7 (contract_aware, issue 19 step 3b): contract-aware extrapolation against plain
    ListOPD on the same λ grid and seeds."""
    clip, budget, tol = test["clip"], test["budget"], test["ndcg_tolerance"]
    seeds = sorted(set(grid_series(points, clip, budget)) & set(grid_series(points, clip, budget,
                                                                            contract_aware=True)))
    plain = [p for p in _test_points(points, clip, [budget]) if p["seed"] in seeds]
    aware = [p for p in _test_points(points, clip, [budget], contract_aware=True) if p["seed"] in seeds]
    prediction = (f"at c = {clip:g}, T = {budget}, seeds {seeds}: contract-aware extrapolation's lower-median onset "
                  f"is above plain ListOPD's (or it has none on the grid), its best seed-mean strict parse rate "
                  f"over λ is at least plain's best, and its seed-mean NDCG@1 parsed at that λ is at least plain's "
                  f"at plain's best λ minus {tol:g}")
    return {"clip": clip, "budget": budget, "ndcg_tolerance": tol, "seeds": seeds,
            "lambdas": sorted({p["reward_scale"] for p in plain}), "prediction": prediction, "points": plain,
            "points_aware": aware}


def _observation_checks(spec: PreregSpec, tests: dict) -> dict:
    """The locked form of the paper's two observations, over the fine grid's λ below its onset: every λ
    below the lowest seed's onset bracket (all of the grid when no seed has an onset)."""
    fine = tests["fine_grid"]
    at = f"at c = {fine['clip']:g}, T = {fine['budget']}, every grid λ below the lowest seed's onset"
    out = {}
    if spec.rise_below_onset:
        rate = spec.rise_below_onset["warm_start_rate"]
        out["rise_below_onset"] = {
            **spec.rise_below_onset, "clip": fine["clip"], "budget": fine["budget"], "seeds": fine["seeds"],
            "prediction": f"{at}: the mean over seeds of the final strict parse rate is above the warm start's "
                          f"{rate:g} ({spec.rise_below_onset['source']})"}
    if spec.ndcg_flat:
        tol = spec.ndcg_flat["tolerance"]
        out["ndcg_flat"] = {
            **spec.ndcg_flat, "clip": fine["clip"], "budget": fine["budget"], "seeds": fine["seeds"],
            "prediction": f"{at}: the mean over seeds of the final NDCG@1 parsed varies by at most {tol:g} "
                          f"(max − min over those λ)"}
    return out


def build_lock(sweep: Sweep, *, locked_at: str | None = None) -> dict:
    """The content of prereg.json (with its content_sha256)."""
    spec: PreregSpec | None = sweep.prereg
    if spec is None:
        raise PreregRefusal(f"{sweep.path} has no prereg: section")
    where = f"{sweep.path}: prereg"
    cal = read_calibration(spec.calibration)
    points = [r.point() for r in sweep.runs]
    clips = sorted({p["clip_strength"] for p in points})
    predictions = [_lambda_stars(cal["p"], cal["b"], c) for c in clips]
    key = "lambda_star_pb" if spec.lambda_star_form == "pb" else "lambda_star_base_neutral"
    lam_star = {row["c"]: row[key] for row in predictions}

    def predicted(test_name: str, clip: float) -> float:
        value = lam_star[clip]
        if value is None:
            raise PreregRefusal(f"{where}: {test_name}: the calibration (p = {cal['p']:g}, b = {cal['b']:g}) predicts "
                                f"no cliff at c = {clip:g} (λ* = +∞): nothing to test")
        return value

    tests = {}
    for name in TESTS:
        test = getattr(spec, name)
        if test is None:
            continue
        if name in ("lr_invariance", "contract_aware"):  # no λ* in these two
            tests[name] = (_lr_test if name == "lr_invariance" else _aware_test)(test, points)
            continue
        if name == "failure_role":  # λ* of the role the warm start's own outputs fail at, held to test 1's rule
            row = cal["roles"].get(test["role"])
            if row is None or row["p"] is None:
                raise PreregRefusal(f"{where}: {name}: role {test['role']!r} is not in the calibration's roles")
            ls = theory.lambda_star_or_none(row["p"], row["b"], test["clip"])
            if ls is None or not math.isfinite(ls):
                raise PreregRefusal(f"{where}: {name}: role {test['role']} predicts no cliff at c = {test['clip']:g}")
            tests[name] = {**_bracket_test(name, test, points, ls, spec.min_seeds_with_onset, f"{where}: {name}"),
                           "role": test["role"], "source": test["source"], "p": row["p"], "b": row["b"],
                           "predicts": f"λ*(p, b, c) of role {test['role']}"}
            continue
        if name == "full_vocabulary_onset":  # issue 19's predictor, held to test 1's rule
            if cal["full_vocabulary_onset"] is None:
                raise PreregRefusal(f"{where}: {name}: the calibration has no full-vocabulary onset (none on its "
                                    f"λ grid, or a calibration from before it was computed)")
            tests[name] = {**_bracket_test(name, test, points, cal["full_vocabulary_onset"],
                                           spec.min_seeds_with_onset, f"{where}: {name}"),
                           "predicts": "the full-vocabulary onset"}
            continue
        ls = predicted(name, test["clip"])
        tests[name] = (_budget_test(test, points, ls, f"{where}: {name}") if name == "budget_extension" else
                       _bracket_test(name, test, points, ls, spec.min_seeds_with_onset, f"{where}: {name}"))
    content = {
        "version": PREREG_VERSION, "locked_at": locked_at or utc_now(),
        "sweep_config_file": sweep.path, "sweep_config_hash": sweep.config_hash, "sweep_config": sweep.raw,
        "calibration": cal, "lambda_star_form": spec.lambda_star_form, "lambda_star": predictions,
        "onset": {"threshold": spec.onset_threshold, "drop": spec.onset_drop,
                  "metric": "summary.val_strict_parse_rate (final validation)",
                  "definition": onset_definition(spec.onset_threshold, spec.onset_drop)},
        "grid": points, "seeds": sorted({p["seed"] for p in points}),
        "budgets": sorted({p["steps"] for p in points}), "clips": clips,
        "tests": tests,
        "checks": _observation_checks(spec, tests) if "fine_grid" in tests else {},
    }
    content = json.loads(json.dumps(content, default=str))  # hash exactly what the file will read back as
    content["content_sha256"] = sha256_of(content)
    return content


def lock(sweep: Sweep) -> dict:
    """Write OUT/prereg.json; refuses once any run folder or result file exists."""
    from listopd.util.io import atomic_write_json

    found = existing_runs(sweep.out)
    if found:
        raise PreregRefusal(f"cannot lock: {len(found)} run folder(s) or result file(s) already exist "
                            f"(e.g. {found[0]}); a pre-registration must come before any run")
    content = build_lock(sweep)
    atomic_write_json(sweep.out / "prereg.json", content)
    return content


# ----------------------------------------------------------------------------------------------- check

def _aware(text: str):
    t = parse_time(text)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def verify_lock(sweep: Sweep) -> dict:
    """The locked content, after the missing / tampered / changed-config checks."""
    path = sweep.out / "prereg.json"
    locked = read_json(path)
    if locked is None:
        raise PreregRefusal(f"{path} is missing: nothing was pre-registered (listopd prereg lock {sweep.path})")
    body = {k: v for k, v in locked.items() if k != "content_sha256"}
    if sha256_of(body) != locked.get("content_sha256"):
        raise PreregRefusal(f"{path} was modified after locking: its content does not match its content_sha256")
    if locked.get("version") != PREREG_VERSION:
        raise InputError(f"expected {PREREG_VERSION} (written by this listopd's `prereg lock`); got "
                         f"{locked.get('version')!r}", path=str(path), field="version")
    if locked.get("sweep_config_hash") != sweep.config_hash:
        raise PreregRefusal(f"{sweep.path} differs from the sweep config locked in {path} "
                            f"(sha256 {sweep.config_hash[:12]} ≠ {str(locked.get('sweep_config_hash'))[:12]})")
    return locked


def check_runs(sweep: Sweep, locked: dict, *, partial: bool) -> list[str]:
    """Refuse late starts and foreign results; return the names of runs without a result (refused unless
    `partial`)."""
    lock_time = _aware(locked["locked_at"])
    missing = []
    for point in locked["grid"]:
        name = point["name"]
        result = read_json(sweep.out / "results" / f"{name}.json")
        marker = read_json(sweep.out / "runs" / name / "sweep_run.json")
        if result is not None and result.get("sweep_config_hash") != locked["sweep_config_hash"]:
            raise PreregRefusal(f"result {name} was made under a different sweep config")
        for record in (result, marker):
            if record is not None and record.get("started_at") and _aware(record["started_at"]) < lock_time:
                raise PreregRefusal(f"late lock: run {name} started at {record['started_at']}, before the lock at "
                                    f"{locked['locked_at']}")
        if result is None:
            missing.append(name)
    if missing and not partial:
        shown = ", ".join(missing[:5]) + (f", … ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise PreregRefusal(f"{len(missing)} of {len(locked['grid'])} runs have no result yet: {shown} "
                            f"(--partial evaluates what exists)")
    return missing


def _onset_row(seed: int, o: Onset) -> dict:
    return {"seed": seed, "onset": o.lam, "bracket": [o.lower, o.lam] if o.lam is not None else None,
            "rule": o.rule, "complete": o.complete}


def _evaluate_bracket(test: dict, table: dict) -> dict:
    """Tests 1 and 3: the seeds' union bracket against the window."""
    key = (test["clip"], test["budget"])
    onsets = {s: table[(*key, s)] for s in test["seeds"]}
    rows = [_onset_row(s, o) for s, o in onsets.items()]
    out = {"status": None, "seeds": rows, "observed": None, "window": test["window"],
           "predicted": test["lambda_star"]}
    if any(not o.complete for o in onsets.values()):
        return {**out, "status": "incomplete", "detail": "some seeds' onsets are undetermined (missing results)"}
    found = {s: o for s, o in onsets.items() if o.lam is not None}
    if len(found) < test["min_seeds_with_onset"]:
        return {**out, "status": "fail", "detail": f"{len(found)} of {len(onsets)} seeds show an onset "
                                                   f"(need {test['min_seeds_with_onset']})"}
    unresolved = [s for s, o in found.items() if o.lower is None]
    if unresolved:
        return {**out, "status": "fail", "detail": f"seed(s) {unresolved} collapse at the lowest grid point: "
                                                   f"the bracket has no lower end"}
    lo, hi = union_bracket(found.values())
    w0, w1 = test["window"]
    ok = lo <= w1 and hi >= w0
    label = test.get("predicts", "λ*")
    what = (f"[{lo:g}, {hi:g}] {'contains' if ok else 'does not contain'} {label} = {w0:.6g}" if w0 == w1 else
            f"[{lo:g}, {hi:g}] {'intersects' if ok else 'misses'} [{w0:.6g}, {w1:.6g}]")
    return {**out, "status": "pass" if ok else "fail", "observed": [lo, hi], "detail": what}


def _value(o: Onset) -> float:
    return o.lam if o.lam is not None else math.inf


def _evaluate_budget(test: dict, table: dict) -> dict:
    """Test 2: the onset at T2 is ≤ the onset at T1 and ≥ λ* − h (lower median or per seed)."""
    c, (t1, t2), lower = test["clip"], test["budgets"], test["window"][0]
    o1 = {s: table[(c, t1, s)] for s in test["seeds"]}
    o2 = {s: table[(c, t2, s)] for s in test["seeds"]}
    out = {"status": None, "rule": test["rule"], "predicted": test["lambda_star"], "window": test["window"],
           "observed": None,
           "seeds_T1": [_onset_row(s, o) for s, o in o1.items()],
           "seeds_T2": [_onset_row(s, o) for s, o in o2.items()]}
    if any(not o.complete for o in [*o1.values(), *o2.values()]):
        return {**out, "status": "incomplete", "detail": "some seeds' onsets are undetermined (missing results)"}

    def holds(v1: float, v2: float) -> bool:
        return math.isfinite(v2) and v2 <= v1 and v2 >= lower

    if test["rule"] == "median":
        m1 = statistics.median_low([_value(o) for o in o1.values()])
        m2 = statistics.median_low([_value(o) for o in o2.values()])
        ok = holds(m1, m2)
        shown = [None if math.isinf(m) else m for m in (m1, m2)]
        reason = (f"median onset T1={t1}: {shown[0]}, T2={t2}: {shown[1]}; needs T2 ≤ T1 and ≥ {lower:.6g}")
        return {**out, "status": "pass" if ok else "fail", "observed": {f"median_T{t1}": shown[0],
                                                                      f"median_T{t2}": shown[1]}, "detail": reason}
    bad = [s for s in test["seeds"] if not holds(_value(o1[s]), _value(o2[s]))]
    reason = (f"every seed's onset at T2={t2} is ≤ its onset at T1={t1} and ≥ {lower:.6g}" if not bad else
              f"seed(s) {bad} break it: onset at T2={t2} must be ≤ the one at T1={t1} and ≥ {lower:.6g}")
    observed = {str(s): [o1[s].lam, o2[s].lam] for s in test["seeds"]}
    return {**out, "status": "fail" if bad else "pass", "observed": observed, "failing_seeds": bad, "detail": reason}


def _evaluate_lr(test: dict, table: dict, table_at_lr: dict) -> dict:
    """Test 4: the onset at the other learning rate (and its budget) is the base one's (same grid bracket)."""
    c, t, t_lr = test["clip"], test["budget"], test["budget_at_lr"]
    base = {s: table[(c, t, s)] for s in test["seeds"]}
    other = {s: table_at_lr[(c, t_lr, s)] for s in test["seeds"]}
    out = {"status": None, "rule": test["rule"], "predicted": None, "window": None, "observed": None,
           "seeds_base": [_onset_row(s, o) for s, o in base.items()],
           "seeds_at_lr": [_onset_row(s, o) for s, o in other.items()]}
    if any(not o.complete for o in [*base.values(), *other.values()]):
        return {**out, "status": "incomplete", "detail": "some seeds' onsets are undetermined (missing results)"}
    if test["rule"] == "median":
        m, m_lr = (statistics.median_low([_value(o) for o in d.values()]) for d in (base, other))
        shown = [None if math.isinf(x) else x for x in (m, m_lr)]
        return {**out, "status": "pass" if m == m_lr else "fail",
                "observed": {"median_base": shown[0], "median_at_lr": shown[1]},
                "detail": f"median onset at the base lr (T = {t}): {shown[0]}, at lr {test['lr']:g} (T = {t_lr}): "
                          f"{shown[1]}; they must be the same grid point"}
    bad = [s for s in test["seeds"] if _value(base[s]) != _value(other[s])]
    return {**out, "status": "fail" if bad else "pass", "failing_seeds": bad,
            "observed": {str(s): [base[s].lam, other[s].lam] for s in test["seeds"]},
            "detail": "every seed's onset is the same at both learning rates" if not bad else
                      f"seed(s) {bad} have another onset at lr {test['lr']:g}"}


def _evaluate_aware(test: dict, table: dict, table_aware: dict, rates: dict, ndcg: dict) -> dict:
    """Test 7: the contract-aware onset above plain's (or none), its best rate ≥ plain's, NDCG@1 not lower."""
    c, t = test["clip"], test["budget"]
    plain = {s: table[(c, t, s)] for s in test["seeds"]}
    aware = {s: table_aware[(c, t, s)] for s in test["seeds"]}
    out = {"status": None, "predicted": None, "window": None, "observed": None,
           "seeds_plain": [_onset_row(s, o) for s, o in plain.items()],
           "seeds_aware": [_onset_row(s, o) for s, o in aware.items()]}
    if any(not o.complete for o in [*plain.values(), *aware.values()]):
        return {**out, "status": "incomplete", "detail": "some seeds' onsets are undetermined (missing results)"}

    def best(points) -> tuple[float, float, float | None]:
        """(λ, seed-mean rate, seed-mean NDCG@1 parsed) at the λ with the best seed-mean rate."""
        by_lam: dict[float, list[dict]] = {}
        for p in points:
            by_lam.setdefault(p["reward_scale"], []).append(p)
        means = {lam: statistics.fmean(rates[p["name"]] for p in ps) for lam, ps in by_lam.items()}
        lam = max(means, key=means.get)
        scores = [ndcg.get(p["name"]) for p in by_lam[lam]]
        return lam, means[lam], None if None in scores else statistics.fmean(scores)

    m_plain, m_aware = (statistics.median_low([_value(o) for o in d.values()]) for d in (plain, aware))
    (l_p, r_p, n_p), (l_a, r_a, n_a) = best(test["points"]), best(test["points_aware"])
    if n_p is None or n_a is None:
        return {**out, "status": "incomplete", "detail": "an NDCG@1 parsed value is missing at a best λ"}
    higher = math.isinf(m_aware) or m_aware > m_plain
    ok = higher and r_a >= r_p and n_a >= n_p - test["ndcg_tolerance"]
    shown = [None if math.isinf(x) else x for x in (m_plain, m_aware)]
    return {**out, "status": "pass" if ok else "fail",
            "observed": {"median_onset_plain": shown[0], "median_onset_aware": shown[1],
                         "best_plain": [l_p, r_p, n_p], "best_aware": [l_a, r_a, n_a]},
            "detail": f"median onset plain {shown[0]}, aware {shown[1]}; best rate plain {r_p:.3f} (λ {l_p:g}), "
                      f"aware {r_a:.3f} (λ {l_a:g}); NDCG@1 parsed there {n_p:.3f} and {n_a:.3f}"}


def _below_onset(fine: dict, table: dict) -> tuple[list[float] | None, str]:
    """The fine grid's λ below every seed's onset; None when some onset is undetermined."""
    onsets = [table[(fine["clip"], fine["budget"], s)] for s in fine["seeds"]]
    if any(not o.complete for o in onsets):
        return None, "some seeds' onsets are undetermined (missing results)"
    found = [o.lam for o in onsets if o.lam is not None]
    lowest = min(found) if found else math.inf
    return [lam for lam in fine["lambdas"] if lam < lowest], (f"λ < {lowest:g}" if found else "the whole grid")


def _evaluate_check(name: str, check: dict, fine: dict, table: dict, rates: dict, ndcg: dict) -> dict:
    """The paper's two observations over the fine grid's λ below its onset (seed means per λ)."""
    out = {"status": None, "predicted": None, "window": None, "observed": None}
    lams, where = _below_onset(fine, table)
    if lams is None:
        return {**out, "status": "incomplete", "detail": where}
    if not lams:
        return {**out, "status": "fail", "detail": "no grid λ lies below the onset: nothing to observe"}
    values = rates if name == "rise_below_onset" else ndcg
    means = {}
    for lam in lams:
        got = [values.get(p["name"]) for p in fine["points"] if p["reward_scale"] == lam]
        if any(v is None for v in got):
            return {**out, "status": "incomplete", "detail": f"a run at λ = {lam:g} has no final value"}
        means[lam] = statistics.fmean(got)
    observed = {f"{lam:g}": round(m, 6) for lam, m in means.items()}
    if name == "rise_below_onset":
        floor = check["warm_start_rate"]
        low = [lam for lam, m in means.items() if m <= floor]
        return {**out, "status": "fail" if low else "pass", "observed": observed,
                "detail": f"{where}: seed-mean strict parse rate above the warm start's {floor:g} at every λ"
                          if not low else f"{where}: at λ = {', '.join(f'{x:g}' for x in low)} it is not above "
                                          f"the warm start's {floor:g}"}
    spread = max(means.values()) - min(means.values())
    return {**out, "status": "pass" if spread <= check["tolerance"] else "fail", "observed": observed,
            "detail": f"{where}: seed-mean NDCG@1 parsed spans {spread:.3f} (tolerance {check['tolerance']:g})"}


def evaluate_locked(locked: dict, rates: dict[str, float | None],
                    ndcg: dict[str, float | None] | None = None) -> list[dict]:
    """Each locked test's (and observation check's) verdict from the runs' final strict parse rates
    (name → rate) and NDCG@1 parsed: a list of {name, status (pass / fail / incomplete), passed (True / False
    / None), predicted (λ*), window, observed, detail, and the per-seed onsets}."""
    onset = locked["onset"]
    results = []

    def table_of(points):
        return onset_table(points, rates, onset["threshold"], onset["drop"])

    for name, test in locked["tests"].items():
        table = table_of(test["points"])
        if name == "lr_invariance":
            verdict = _evaluate_lr(test, table, table_of(test["points_at_lr"]))
        elif name == "contract_aware":
            verdict = _evaluate_aware(test, table, table_of(test["points_aware"]), rates, ndcg or {})
        else:
            verdict = (_evaluate_budget if name == "budget_extension" else _evaluate_bracket)(test, table)
        results.append({"name": name, "passed": {"pass": True, "fail": False}.get(verdict["status"]), **verdict})
    for name, check_ in (locked.get("checks") or {}).items():
        fine = locked["tests"]["fine_grid"]
        verdict = _evaluate_check(name, check_, fine, table_of(fine["points"]), rates, ndcg or {})
        results.append({"name": name, "passed": {"pass": True, "fail": False}.get(verdict["status"]), **verdict})
    return results


def check(sweep: Sweep, *, partial: bool = False) -> dict:
    """Verify the lock, evaluate the tests, write OUT/prereg_result.json; returns what it wrote."""
    from listopd.util.io import atomic_write_json

    locked = verify_lock(sweep)
    missing = check_runs(sweep, locked, partial=partial)
    rates = result_rates(sweep.out, locked["grid"])
    tests = evaluate_locked(locked, rates, result_rates(sweep.out, locked["grid"], key=NDCG_KEY))
    statuses = [t["status"] for t in tests]
    overall = "pass" if all(s == "pass" for s in statuses) else ("fail" if "fail" in statuses else "incomplete")
    result = {"checked_at": utc_now(), "locked_at": locked["locked_at"], "prereg_sha256": locked["content_sha256"],
              "sweep_config_hash": sweep.config_hash, "partial": bool(missing), "missing": missing,
              "calibration": {k: locked["calibration"][k] for k in ("p", "b", "binding_role")},
              "onset": locked["onset"], "tests": tests, "overall": overall}
    atomic_write_json(sweep.out / "prereg_result.json", result)
    return result


# --------------------------------------------------------------------------------------------- printing

TITLES = {"fine_grid": "test 1  fine grid", "budget_extension": "test 2  budget extension",
          "small_clip": "test 3  small-clip cross-prediction", "lr_invariance": "test 4  learning-rate invariance",
          "full_vocabulary_onset": "test 5  the full-vocabulary predictor's onset (issue 19)",
          "failure_role": "test 6  λ* of the role where the warm start's outputs fail",
          "contract_aware": "test 7  contract-aware extrapolation against plain ListOPD (issue 19)",
          "rise_below_onset": "check A  below the onset the parse rate rises from the warm start",
          "ndcg_flat": "check B  below the onset NDCG@1 parsed is flat across λ"}
NDCG_KEY = "val_ndcg@1_parsed"


def format_lock(content: dict) -> str:
    cal = content["calibration"]
    lines = [f"locked {content['locked_at']}   content sha256 {content['content_sha256'][:16]}",
             f"calibration {cal['path']}: p = {cal['p']:.6g}  b = {cal['b']:.6g}  (binding role {cal['binding_role']})",
             f"onset: {content['onset']['definition']}",
             "      c   λ*(p,b,c)     λ*(p,c)"]
    for row in content["lambda_star"]:
        pb, neutral = _num(row["lambda_star_pb"]), _num(row["lambda_star_base_neutral"])
        lines.append(f"  {row['c']:>5g}  {pb:>10}  {neutral:>10}")
    for name, test in [*content["tests"].items(), *(content.get("checks") or {}).items()]:
        lines.append(f"{TITLES[name]}: {test['prediction']}")
    lines.append(f"{len(content['grid'])} runs, seeds {content['seeds']}, budgets {content['budgets']}")
    return "\n".join(lines)


def _num(x) -> str:
    return "∞" if x is None else f"{x:.4f}"


def _seed_line(row: dict) -> str:
    if not row["complete"]:
        return f"    seed {row['seed']}: undetermined (missing results)"
    if row["onset"] is None:
        return f"    seed {row['seed']}: no onset on the grid"
    lo = "−∞" if row["bracket"][0] is None else f"{row['bracket'][0]:g}"
    return f"    seed {row['seed']}: onset {row['onset']:g}  bracket ({lo}, {row['onset']:g}]  ({row['rule']})"


def format_check(result: dict) -> str:
    lines = [f"prereg locked {result['locked_at']}: content hash ok, config hash ok"
             + (f"; PARTIAL: {len(result['missing'])} runs missing" if result["partial"] else ""),
             f"onset: {result['onset']['definition']}"]
    for res in result["tests"]:
        name = res["name"]
        if res["predicted"] is None:  # test 4 and the observation checks predict no λ
            lines.append(f"{TITLES[name]}: {res['status'].upper()}")
        else:
            what = {"full_vocabulary_onset": "full-vocabulary onset",
                    "failure_role": "λ* of the failure role"}.get(name, "λ*")
            lines.append(f"{TITLES[name]}: {res['status'].upper()}   predicted {what} = {res['predicted']:.6g}")
            window = ", ".join("∞" if w is None else f"{w:.6g}" for w in res["window"])
            lines.append(f"  window [{window}]")
        if name in ("rise_below_onset", "ndcg_flat"):
            if res["observed"]:
                lines.append("  " + "  ".join(f"λ {k}: {v:.3f}" for k, v in res["observed"].items()))
        elif name in ("lr_invariance", "contract_aware"):
            pairs = ((("base lr", "seeds_base"), ("other lr", "seeds_at_lr")) if name == "lr_invariance" else
                     (("plain", "seeds_plain"), ("contract-aware", "seeds_aware")))
            for label, key in pairs:
                rows = res[key]
                lines.append(f"  {label}:")
                lines += [_seed_line(r) for r in rows]
        elif name == "budget_extension":
            for label, rows in (("T1", res["seeds_T1"]), ("T2", res["seeds_T2"])):
                lines.append(f"  {label}:")
                lines += [_seed_line(r) for r in rows]
        else:
            lines += [_seed_line(r) for r in res["seeds"]]
        lines.append(f"  {res.get('detail', '')}")
    lines.append(f"overall: {result['overall'].upper()}")
    return "\n".join(lines)
