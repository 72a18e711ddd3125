"""listopd prereg: the lock (content, refusals), check's refusals (missing, tampered, changed config, late
lock, missing runs) and the three tests evaluated on hand-written results whose answers are known.

The set-up: calibrated p = 0.999, b = 0.9, so λ*(p, b, 3) = 1.2334 and λ*(p, b, 2) = 1.1473. Grid:
  c = 3, T = 100: λ 1.15, 1.2, 1.225, 1.25, 1.275, 1.3 × seeds 0-2   (test 1, and T1 of test 2)
  c = 3, T = 400: λ 1.15, 1.2, 1.25, 1.3 × seeds 0-2                 (T2 of test 2; grid step 0.05)
  c = 2, T = 100: λ 1.05, 1.1, 1.125, 1.15, 1.175, 1.2 × seeds 0-1   (test 3; grid step 0.025)
A result's strict parse rate is 0.9 below its series' cliff λ and 0.1 from it on (no training happens).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from listopd.core import theory
from listopd.cli import main
from listopd.util.errors import ListopdError
from listopd.experiment.prereg import build_lock, evaluate_locked
from listopd.experiment.sweep import load_sweep, utc_now

P, B = 0.999, 0.9
GRID = [{"reward_scale": [1.15, 1.2, 1.225, 1.25, 1.275, 1.3], "seed": [0, 1, 2], "clip_strength": 3, "steps": 100},
        {"reward_scale": [1.15, 1.2, 1.25, 1.3], "seed": [0, 1, 2], "clip_strength": 3, "steps": 400},
        {"reward_scale": [1.05, 1.1, 1.125, 1.15, 1.175, 1.2], "seed": [0, 1], "clip_strength": 2, "steps": 100}]
# onset λ per (c, T, seed) in the passing scenario
PASSING = {(3, 100, 0): 1.25, (3, 100, 1): 1.25, (3, 100, 2): 1.275,
           (3, 400, 0): 1.25, (3, 400, 1): 1.25, (3, 400, 2): 1.25,
           (2, 100, 0): 1.15, (2, 100, 1): 1.15}


def write_calibration(folder: Path, p=P, b=B) -> str:
    path = folder / "calibration.json"
    path.write_text(json.dumps({"version": 1, "p": p, "b": b, "c": 3.0, "lambda_star": None, "lambda_star_ci": [1.2, 1.3],
                                "binding_role": "close_list"}))
    return str(path)


def make_sweep(folder: Path, grid=GRID, **prereg_changes) -> str:
    for name in ("student", "teacher"):
        (folder / name).mkdir(exist_ok=True)
    for name in ("train.jsonl", "val.jsonl"):
        (folder / name).write_text("")
    base = {"student": str(folder / "student"), "teacher": str(folder / "teacher"),
            "tasks": str(folder / "train.jsonl"), "val_tasks": str(folder / "val.jsonl")}
    prereg = {"calibration": write_calibration(folder), "onset_threshold": 0.5, "onset_drop": 0.3,
              "fine_grid": {"clip": 3, "budget": 100},
              "budget_extension": {"clip": 3, "budgets": [400, 100]},
              "small_clip": {"clip": 2, "budget": 100}}
    prereg.update(prereg_changes)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"out": str(folder / "out"), "base": base, "grid": grid, "prereg": prereg}))
    return str(path)


def rates_for(sweep, onsets: dict, *, rate_below=0.9, rate_from=0.1) -> dict:
    """name → strict parse rate: `rate_below` below the series' onset λ, `rate_from` from it on."""
    rates = {}
    for run in sweep.runs:
        cliff = onsets.get((run.clip_strength, run.steps, run.seed))
        rates[run.name] = rate_from if cliff is not None and run.reward_scale >= cliff else rate_below
    return rates


def write_results(sweep, rates: dict, *, started_at: str | None = None) -> None:
    for run in sweep.runs:
        if rates.get(run.name) is None:
            continue
        record = {"name": run.name, "grid_point": run.point(), "sweep_config_hash": sweep.config_hash,
                  "summary": {"val_strict_parse_rate": rates[run.name]}, "started_at": started_at or utc_now(),
                  "ended_at": utc_now()}
        sweep.result_path(run).parent.mkdir(parents=True, exist_ok=True)
        sweep.result_path(run).write_text(json.dumps(record))


def verdicts(sweep, onsets: dict, **kw) -> dict:
    return {t["name"]: t for t in evaluate_locked(build_lock(sweep), rates_for(sweep, onsets, **kw))}


@pytest.fixture
def sweep(tmp_path):
    return load_sweep(make_sweep(tmp_path))


# ---------------------------------------------------------------------------------------------- lock

def test_lock_content(sweep, capsys):
    assert main(["prereg", "lock", sweep.path]) == 0
    assert "wrote" in capsys.readouterr().out
    locked = json.loads((sweep.out / "prereg.json").read_text())
    ls3, ls2 = theory.lambda_star(P, B, 3.0), theory.lambda_star(P, B, 2.0)
    assert ls3 == pytest.approx(1.2334, abs=1e-4) and ls2 == pytest.approx(1.1473, abs=1e-4)
    assert (locked["calibration"]["p"], locked["calibration"]["b"]) == (P, B)
    assert len(locked["calibration"]["sha256"]) == 64
    assert locked["lambda_star"] == [
        {"c": 2.0, "lambda_star_pb": ls2, "lambda_star_base_neutral": theory.lambda_star_base_neutral(P, 2.0)},
        {"c": 3.0, "lambda_star_pb": ls3, "lambda_star_base_neutral": theory.lambda_star_base_neutral(P, 3.0)}]
    tests = locked["tests"]
    assert tests["fine_grid"]["window"] == [ls3, ls3] and tests["fine_grid"]["min_seeds_with_onset"] == 3
    assert tests["small_clip"]["window"] == pytest.approx([ls2 - 0.025, ls2 + 0.025])
    assert tests["budget_extension"]["budgets"] == [100, 400] and tests["budget_extension"]["rule"] == "median"
    assert tests["budget_extension"]["window"][0] == pytest.approx(ls3 - 0.05)
    assert len(tests["fine_grid"]["points"]) == 18 and len(tests["budget_extension"]["points"]) == 30
    assert len(locked["grid"]) == 42 and locked["seeds"] == [0, 1, 2] and locked["budgets"] == [100, 400]
    assert locked["onset"]["threshold"] == 0.5 and locked["onset"]["drop"] == 0.3
    assert locked["sweep_config"] == yaml.safe_load(Path(sweep.path).read_text())
    assert locked["sweep_config_hash"] == sweep.config_hash and len(locked["content_sha256"]) == 64


def test_lock_base_neutral_form(tmp_path):
    locked = build_lock(load_sweep(make_sweep(tmp_path, lambda_star_form="base_neutral")))
    assert locked["tests"]["fine_grid"]["lambda_star"] == theory.lambda_star_base_neutral(P, 3.0)
    assert locked["tests"]["small_clip"]["lambda_star"] == theory.lambda_star_base_neutral(P, 2.0)


@pytest.mark.parametrize("what", ["run folder", "result file"])
def test_lock_refuses_once_runs_exist(sweep, what, capsys):
    run = sweep.runs[5]
    if what == "run folder":
        sweep.run_dir(run).mkdir(parents=True)
    else:
        write_results(sweep, {run.name: 0.9})
    assert main(["prereg", "lock", sweep.path]) == 2
    assert "already exist" in capsys.readouterr().err
    assert not (sweep.out / "prereg.json").exists()


def test_lock_refuses_what_cannot_be_tested(tmp_path):
    unreachable = [{**GRID[0], "reward_scale": [1.3, 1.35]}, *GRID[1:]]
    with pytest.raises(ListopdError, match=r"fine_grid: the λ grid \[1.3, 1.35\] .* cannot pass"):
        build_lock(load_sweep(make_sweep(tmp_path, grid=unreachable)))
    sweep = load_sweep(make_sweep(tmp_path))
    write_calibration(tmp_path, p=None, b=None)
    with pytest.raises(ListopdError, match="no numbers p and b"):
        build_lock(sweep)
    write_calibration(tmp_path, p=0.9, b=0.95)  # b > p: no cliff
    with pytest.raises(ListopdError, match="predicts no cliff"):
        build_lock(sweep)


@pytest.mark.parametrize("changes, message", [
    ({"bogus": 1}, r"prereg: unknown key\(s\) 'bogus'"),
    ({"onset_threshold": None}, "onset_threshold: expected a number"),
    ({"fine_grid": {"clip": 5, "budget": 100}}, "no runs with clip_strength 5 and steps 100"),
    ({"budget_extension": {"clip": 3, "budgets": [100, 100]}}, "budgets must differ"),
    ({"budget_extension": {"clip": 3, "budgets": [100, 400], "rule": "mean"}}, "rule must be one of"),
    ({"min_seeds_with_onset": 3}, "exceeds the 2 seed"),
    ({"fine_grid": None, "budget_extension": None, "small_clip": None}, "at least one"),
])
def test_prereg_section_is_checked_with_the_sweep(tmp_path, changes, message):
    with pytest.raises(ListopdError, match=message):
        load_sweep(make_sweep(tmp_path, **changes))


# ---------------------------------------------------------------------------------------------- check

def test_check_end_to_end_pass_then_fail(sweep, capsys):
    assert main(["sweep", sweep.path, "--quiet"]) == 2  # not locked yet: the sweep refuses to start
    assert "lock first" in capsys.readouterr().err
    assert main(["prereg", "lock", sweep.path]) == 0
    write_results(sweep, rates_for(sweep, PASSING))
    capsys.readouterr()
    assert main(["prereg", "check", sweep.path]) == 0
    text = capsys.readouterr().out
    assert "test 1  fine grid: PASS" in text and "seed 2: onset 1.275  bracket (1.25, 1.275]" in text
    assert "[1.225, 1.275] contains λ* = 1.23342" in text and "overall: PASS" in text
    written = json.loads((sweep.out / "prereg_result.json").read_text())
    assert written["overall"] == "pass" and [t["passed"] for t in written["tests"]] == [True, True, True]
    assert written["tests"][0]["observed"] == [1.225, 1.275]

    write_results(sweep, rates_for(sweep, {**PASSING, (3, 100, 0): 1.3, (3, 100, 1): 1.3, (3, 100, 2): 1.3}))
    assert main(["prereg", "check", sweep.path]) == 1
    assert "test 1  fine grid: FAIL" in capsys.readouterr().out
    assert json.loads((sweep.out / "prereg_result.json").read_text())["overall"] == "fail"


def test_check_refuses_missing_lock(sweep, capsys):
    assert main(["prereg", "check", sweep.path]) == 2
    err = capsys.readouterr().err
    assert "prereg.json is missing" in err and len(err.strip().splitlines()) == 1


def test_check_refuses_tampered_lock(sweep, capsys):
    assert main(["prereg", "lock", sweep.path]) == 0
    write_results(sweep, rates_for(sweep, PASSING))
    path = sweep.out / "prereg.json"
    locked = json.loads(path.read_text())
    locked["tests"]["fine_grid"]["window"] = [1.3, 1.3]
    path.write_text(json.dumps(locked))
    assert main(["prereg", "check", sweep.path]) == 2
    assert "modified after locking" in capsys.readouterr().err


def test_check_refuses_changed_config(tmp_path, capsys):
    sweep = load_sweep(make_sweep(tmp_path))
    assert main(["prereg", "lock", sweep.path]) == 0
    write_results(sweep, rates_for(sweep, PASSING))
    make_sweep(tmp_path, onset_threshold=0.6)  # same file, a looser threshold after the fact
    capsys.readouterr()
    assert main(["prereg", "check", sweep.path]) == 2
    assert "differs from the sweep config locked" in capsys.readouterr().err
    assert main(["sweep", sweep.path, "--quiet"]) == 2  # and the sweep will not run under the changed config


def test_check_refuses_runs_started_before_the_lock(sweep, capsys):
    assert main(["prereg", "lock", sweep.path]) == 0
    write_results(sweep, rates_for(sweep, PASSING), started_at="2020-01-01T00:00:00+00:00")
    assert main(["prereg", "check", sweep.path]) == 2
    assert "late lock: run lam1.150_c3_s0_T100 started at 2020-01-01" in capsys.readouterr().err


def test_check_refuses_a_partial_run_started_before_the_lock(sweep, capsys):
    assert main(["prereg", "lock", sweep.path]) == 0
    write_results(sweep, rates_for(sweep, PASSING))
    run = sweep.runs[-1]
    sweep.result_path(run).unlink()
    sweep.run_dir(run).mkdir(parents=True)
    (sweep.run_dir(run) / "sweep_run.json").write_text(json.dumps({"started_at": "2020-01-01T00:00:00"}))
    assert main(["prereg", "check", sweep.path, "--partial"]) == 2
    assert f"late lock: run {run.name}" in capsys.readouterr().err


def test_check_refuses_missing_runs_unless_partial(sweep, capsys):
    assert main(["prereg", "lock", sweep.path]) == 0
    rates = rates_for(sweep, PASSING)
    gap = "lam1.200_c3_s0_T100"  # below seed 0's onset at c = 3, T = 100: tests 1 and 2 become undecidable
    write_results(sweep, {**rates, gap: None})
    assert main(["prereg", "check", sweep.path]) == 2
    assert f"1 of 42 runs have no result yet: {gap}" in capsys.readouterr().err
    assert main(["prereg", "check", sweep.path, "--partial"]) == 1
    assert "PARTIAL: 1 runs missing" in capsys.readouterr().out
    result = json.loads((sweep.out / "prereg_result.json").read_text())
    assert [t["status"] for t in result["tests"]] == ["incomplete", "incomplete", "pass"]
    assert result["missing"] == [gap] and result["overall"] == "incomplete"


# ------------------------------------------------------------------------------ the three tests' rules

def test_fine_grid_rules(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path))
    v = verdicts(sweep, PASSING)
    assert v["fine_grid"]["status"] == "pass" and v["fine_grid"]["observed"] == [1.225, 1.275]
    late = {**PASSING, (3, 100, 0): 1.3, (3, 100, 1): 1.3, (3, 100, 2): 1.3}
    assert verdicts(sweep, late)["fine_grid"]["status"] == "fail"  # [1.275, 1.3] misses 1.2334
    lowest = {**PASSING, (3, 100, 0): 1.15}
    res = verdicts(sweep, lowest)["fine_grid"]
    assert res["status"] == "fail" and "lowest grid point" in res["detail"]
    no_onset = {k: v for k, v in PASSING.items() if k != (3, 100, 2)}
    res = verdicts(sweep, no_onset)["fine_grid"]
    assert res["status"] == "fail" and "2 of 3 seeds show an onset (need 3)" in res["detail"]
    relaxed = load_sweep(make_sweep(tmp_path, min_seeds_with_onset=2))
    res = verdicts(relaxed, no_onset)["fine_grid"]
    assert res["status"] == "pass" and res["observed"] == [1.225, 1.25]
    # the drop rule: 0.95 → 0.6 is above the threshold but a drop of 0.35 > 0.3
    res = verdicts(sweep, PASSING, rate_below=0.95, rate_from=0.6)["fine_grid"]
    assert res["status"] == "pass" and {r["rule"] for r in res["seeds"]} == {"drop"}


def test_budget_extension_rules(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path))
    assert verdicts(sweep, PASSING)["budget_extension"]["status"] == "pass"  # medians 1.25 (T1), 1.25 (T2)
    later = {**PASSING, (3, 400, 0): 1.3, (3, 400, 1): 1.3, (3, 400, 2): 1.3}
    res = verdicts(sweep, later)["budget_extension"]
    assert res["status"] == "fail" and res["observed"] == {"median_T100": 1.25, "median_T400": 1.3}
    below = {**PASSING, (3, 400, 0): 1.15, (3, 400, 1): 1.15, (3, 400, 2): 1.15}  # 1.15 < λ* − 0.05 = 1.1834
    assert verdicts(sweep, below)["budget_extension"]["status"] == "fail"
    none_at_t2 = {k: v for k, v in PASSING.items() if k[1] != 400}
    assert verdicts(sweep, none_at_t2)["budget_extension"]["status"] == "fail"
    none_at_t1 = {k: v for k, v in PASSING.items() if k[:2] != (3, 100)}  # T1 onset above the grid: +∞
    assert verdicts(sweep, none_at_t1)["budget_extension"]["status"] == "pass"
    # one seed later at T2: the lower median still passes, the per-seed rule does not
    one_late = {**PASSING, (3, 400, 0): 1.3}
    assert verdicts(sweep, one_late)["budget_extension"]["status"] == "pass"
    strict = load_sweep(make_sweep(tmp_path, budget_extension={"clip": 3, "budgets": [100, 400], "rule": "per_seed"}))
    res = verdicts(strict, one_late)["budget_extension"]
    assert res["status"] == "fail" and res["failing_seeds"] == [0]
    assert verdicts(strict, PASSING)["budget_extension"]["status"] == "pass"


def test_small_clip_rules(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path))  # λ*(c=2) = 1.1473, window [1.1223, 1.1723]
    assert verdicts(sweep, PASSING)["small_clip"]["status"] == "pass"  # brackets (1.125, 1.15]
    one_step_late = {**PASSING, (2, 100, 0): 1.175, (2, 100, 1): 1.175}  # (1.15, 1.175]: within one step
    assert verdicts(sweep, one_step_late)["small_clip"]["status"] == "pass"
    two_steps_late = {**PASSING, (2, 100, 0): 1.2, (2, 100, 1): 1.2}  # (1.175, 1.2]: misses the window
    res = verdicts(sweep, two_steps_late)["small_clip"]
    assert res["status"] == "fail" and "misses" in res["detail"]
    too_early = {**PASSING, (2, 100, 0): 1.1, (2, 100, 1): 1.1}  # (1.05, 1.1]: ends below 1.1223
    assert verdicts(sweep, too_early)["small_clip"]["status"] == "fail"


# ------------------------------------------------------------------ round 2: the lr axis, test 4, checks A and B

LR_GRID = [*GRID, {"reward_scale": [1.15, 1.2, 1.225, 1.25, 1.275, 1.3], "seed": [0, 1, 2], "clip_strength": 3,
                   "steps": 300, "lr": "1e-6"}]  # YAML 1.1 reads 1e-6 as a string: the sweep accepts it


def _round2_sweep(tmp_path, **changes):
    prereg = dict(lr_invariance={"clip": 3, "budget": 100, "lr": 1e-6, "budget_at_lr": 300},
                  rise_below_onset={"warm_start_rate": 0.5, "source": "sampled validation, 64 tasks"},
                  ndcg_flat={"tolerance": 0.05})
    prereg.update(changes)
    return load_sweep(make_sweep(tmp_path, grid=LR_GRID, **prereg))


def _rates(sweep, onsets_base: dict, onsets_lr: dict, below=0.9, above=0.1) -> dict:
    rates = {}
    for run in sweep.runs:
        onsets = onsets_lr if run.lr is not None else onsets_base
        cliff = onsets.get((run.clip_strength, run.steps, run.seed))
        rates[run.name] = above if cliff is not None and run.reward_scale >= cliff else below
    return rates


def test_the_lr_axis_names_runs_and_keeps_the_base_series_apart(tmp_path):
    sweep = _round2_sweep(tmp_path)
    at_lr = [r for r in sweep.runs if r.lr is not None]
    assert len(at_lr) == 18 and all(r.name.endswith("_lr1e-06") and r.config.lr == 1e-6 for r in at_lr)
    assert all(r.point()["lr"] == 1e-6 for r in at_lr)
    assert all("lr" not in r.point() and r.config.lr == 1e-5 for r in sweep.runs if r.lr is None)
    lock = build_lock(sweep)
    # tests 1-3 see only the base learning rate's points
    assert all("lr" not in p for name in ("fine_grid", "budget_extension", "small_clip")
               for p in lock["tests"][name]["points"])
    test4 = lock["tests"]["lr_invariance"]
    assert len(test4["points"]) == 18 and len(test4["points_at_lr"]) == 18
    assert "same grid bracket" in test4["prediction"]
    assert set(lock["checks"]) == {"rise_below_onset", "ndcg_flat"}


def test_lr_invariance_passes_on_the_same_bracket_and_fails_on_another(tmp_path):
    sweep = _round2_sweep(tmp_path)
    lock = build_lock(sweep)
    same = {(3, 300, s): PASSING[(3, 100, s)] for s in range(3)}
    got = {t["name"]: t for t in evaluate_locked(lock, _rates(sweep, PASSING, same))}
    assert got["lr_invariance"]["status"] == "pass"
    moved = {(3, 300, s): 1.3 for s in range(3)}  # the onset moved up one bracket at the smaller lr
    got = {t["name"]: t for t in evaluate_locked(lock, _rates(sweep, PASSING, moved))}
    assert got["lr_invariance"]["status"] == "fail"
    assert got["lr_invariance"]["observed"] == {"median_base": 1.25, "median_at_lr": 1.3}
    # the base series are untouched by the lr runs: test 1 still passes
    assert got["fine_grid"]["status"] == "pass"


def test_observation_checks_read_the_runs_below_the_fine_grid_s_onset(tmp_path):
    sweep = _round2_sweep(tmp_path)
    lock = build_lock(sweep)
    rates = _rates(sweep, PASSING, {})
    flat = {name: 0.3 for name in rates}
    got = {t["name"]: t for t in evaluate_locked(lock, rates, flat)}
    # the lowest seed onset at (3, 100) is 1.25: λ 1.15, 1.2, 1.225 are below it, all at 0.9 > 0.5
    assert got["rise_below_onset"]["status"] == "pass"
    assert set(got["rise_below_onset"]["observed"]) == {"1.15", "1.2", "1.225"}
    assert got["ndcg_flat"]["status"] == "pass"
    # λ = 1.2 at 0.65: above the onset threshold (0.5) and within the drop rule (0.3) of 0.9, so the onset stays
    # at 1.25, but not above a warm start measured at 0.7
    (tmp_path / "b").mkdir()
    sweep = _round2_sweep(tmp_path / "b", rise_below_onset={"warm_start_rate": 0.7, "source": "x"})
    lock = build_lock(sweep)
    low = {**rates, **{r.name: 0.65 for r in sweep.runs if r.reward_scale == 1.2 and r.lr is None
                       and (r.clip_strength, r.steps) == (3, 100)}}
    sloped = {**flat, **{r.name: 0.4 for r in sweep.runs if r.reward_scale == 1.225 and r.lr is None}}
    got = {t["name"]: t for t in evaluate_locked(lock, low, sloped)}
    assert got["rise_below_onset"]["status"] == "fail" and "1.2" in got["rise_below_onset"]["detail"]
    assert got["ndcg_flat"]["status"] == "fail" and "0.100" in got["ndcg_flat"]["detail"]


@pytest.mark.parametrize("changes, message", [
    ({"lr_invariance": {"clip": 3, "budget": 100, "lr": 1e-7, "budget_at_lr": 300}}, "no runs with .* lr 1e-07"),
    ({"rise_below_onset": {"warm_start_rate": 0.5}}, "source"),
    ({"rise_below_onset": {"warm_start_rate": 1.5, "source": "x"}}, "warm_start_rate"),
    ({"ndcg_flat": {"tolerance": 0}}, "tolerance"),
    ({"fine_grid": None}, "read the fine grid's onset"),
])
def test_round2_sections_are_checked(tmp_path, changes, message):
    with pytest.raises(ListopdError, match=message):
        _round2_sweep(tmp_path, **changes)


def test_round2_lock_and_check_from_the_command_line(tmp_path, capsys):
    sweep = _round2_sweep(tmp_path)
    assert main(["prereg", "lock", sweep.path]) == 0
    text = capsys.readouterr().out
    assert "test 4  learning-rate invariance:" in text and "check A" in text and "check B" in text
    same = {(3, 300, s): PASSING[(3, 100, s)] for s in range(3)}
    write_results(sweep, _rates(sweep, PASSING, same))
    main(["prereg", "check", sweep.path])
    text = capsys.readouterr().out
    assert "test 4  learning-rate invariance: PASS" in text
    assert "check A  below the onset the parse rate rises from the warm start: PASS" in text
    assert "check B  below the onset NDCG@1 parsed is flat across λ: INCOMPLETE" in text  # no NDCG in these results
    assert "overall: INCOMPLETE" in text


def test_full_vocabulary_onset_is_held_to_test_1_s_rule_and_both_roles_are_recorded(tmp_path):
    cal = json.loads(Path(write_calibration(tmp_path)).read_text())
    cal.update(failure_roles={"duplicate_id@id_4": 30, "missing_quote@quote": 2},
               roles={"id_4": {"lambda_star": 1.4, "p": 0.999, "b": 0.9}, "id": {"p": 0.9995, "b": 0.9}},
               full_vocabulary={"onset_lambda": 1.275, "peak_lambda": 1.2})
    path = make_sweep(tmp_path, full_vocabulary_onset={"clip": 3, "budget": 100},
                      failure_role={"clip": 3, "budget": 100, "role": "id", "source": "sampled outputs"})
    Path(tmp_path / "calibration.json").write_text(json.dumps(cal))
    sweep = load_sweep(path)
    lock = build_lock(sweep)
    assert lock["calibration"]["failure_role"] == "id_4" and lock["calibration"]["failure_role_lambda_star"] == 1.4
    assert lock["calibration"]["predicting_role"] == "binding_role"
    assert lock["tests"]["full_vocabulary_onset"]["window"] == [1.275, 1.275]
    id_star = theory.lambda_star(0.9995, 0.9, 3.0)  # 1.2034: inside the grid, below test 1's bracket
    assert lock["tests"]["failure_role"]["window"] == [pytest.approx(id_star)] * 2
    assert "role id's λ*" in lock["tests"]["failure_role"]["prediction"]
    got = {t["name"]: t for t in evaluate_locked(lock, rates_for(sweep, PASSING))}
    # seeds' union bracket [1.225, 1.275]: contains λ* = 1.2334 (test 1) and the full-vocabulary onset 1.275
    assert got["fine_grid"]["status"] == "pass" and got["full_vocabulary_onset"]["status"] == "pass"
    assert "the full-vocabulary onset = 1.275" in got["full_vocabulary_onset"]["detail"]
    assert got["failure_role"]["status"] == "fail"  # 1.2034 lies below the union bracket [1.225, 1.275]
    late = {**PASSING, (3, 100, 2): 1.25}  # union bracket [1.225, 1.25]: λ* still in, 1.275 out
    got = {t["name"]: t for t in evaluate_locked(lock, rates_for(sweep, late))}
    assert got["fine_grid"]["status"] == "pass" and got["full_vocabulary_onset"]["status"] == "fail"


# ------------------------------------------------------------------ issue 19 step 3b: test 7, contract-aware vs plain

AWARE_GRID = [*GRID, {"reward_scale": [1.15, 1.2, 1.225, 1.25, 1.275, 1.3], "seed": [0, 1, 2], "clip_strength": 3,
                      "steps": 100, "contract_aware": True}]


def test_contract_aware_axis_and_test_7(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path, grid=AWARE_GRID,
                                  contract_aware={"clip": 3, "budget": 100, "ndcg_tolerance": 0.05}))
    aware = [r for r in sweep.runs if r.contract_aware]
    assert len(aware) == 18 and all(r.name.endswith("_aware") and r.config.contract_aware for r in aware)
    assert all("contract_aware" not in r.point() for r in sweep.runs if not r.contract_aware)
    lock = build_lock(sweep)
    assert all("contract_aware" not in p for p in lock["tests"]["fine_grid"]["points"])  # test 1: plain only
    names_aware = {r.name for r in aware}

    def rates(onset_aware):
        out = {}
        for run in sweep.runs:
            cliff = onset_aware if run.name in names_aware else PASSING.get((run.clip_strength, run.steps, run.seed))
            out[run.name] = 0.1 if cliff is not None and run.reward_scale >= cliff else 0.9
        return out

    ndcg = {r.name: 0.3 for r in sweep.runs}
    got = {t["name"]: t for t in evaluate_locked(lock, rates(None), ndcg)}  # aware: no onset on the grid
    assert got["contract_aware"]["status"] == "pass" and got["fine_grid"]["status"] == "pass"
    got = {t["name"]: t for t in evaluate_locked(lock, rates(1.2), ndcg)}  # aware collapses earlier
    assert got["contract_aware"]["status"] == "fail"
    lower_ndcg = {**ndcg, **{n: 0.2 for n in names_aware}}
    got = {t["name"]: t for t in evaluate_locked(lock, rates(None), lower_ndcg)}  # NDCG 0.1 lower: beyond 0.05
    assert got["contract_aware"]["status"] == "fail" and "0.300 and 0.200" in got["contract_aware"]["detail"]
    assert main(["prereg", "lock", sweep.path]) == 0
