"""listopd sweep: the YAML plan, checks before any run, a tiny real sweep on the trainer fixtures' models
(result files, skip on re-run, resume after an interruption, --dry-run estimates), and the onset rule.

Real training here: 4 + 1 runs of 2 OPD steps on tiny models (~1.5 s each), plus one 2-step timing run.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from listopd.cli import main
from listopd.util.errors import ListopdError
from listopd.core.onset import find_onset, grid_step, onset_table
from listopd.experiment.sweep import load_sweep, result_rates, run_name, run_status, select, train_seconds

pytestmark = pytest.mark.timeout(300)


def tiny_base(world) -> dict:
    return dict(student=world.student, teacher=world.teacher, tasks=world.train, val_tasks=world.val,
                batch_size=4, micro_batch_size=4, max_new_tokens=8, lr=1e-3, eval_every=1, save_every=1,
                threads=1)


def write_sweep(folder: Path, base: dict, grid, **extra) -> str:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"out": str(folder / "out"), "base": base, "grid": grid, **extra}))
    return str(path)


def fake_base(folder: Path) -> dict:
    """Paths that exist (load_sweep checks existence only; nothing here is loaded)."""
    for name in ("student", "teacher"):
        (folder / name).mkdir(exist_ok=True)
    for name in ("train.jsonl", "val.jsonl"):
        (folder / name).write_text("")
    return dict(student=str(folder / "student"), teacher=str(folder / "teacher"), tasks=str(folder / "train.jsonl"),
                val_tasks=str(folder / "val.jsonl"))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ plan and checks

def test_plan_names_order_and_union_of_blocks(tmp_path):
    base = fake_base(tmp_path)
    grid = [{"reward_scale": [1.2, 1.1], "seed": [0, 1], "clip_strength": 5, "steps": 200},
            {"reward_scale": [1.1, 1.2125], "seed": 0, "clip_strength": [5, 2], "steps": [200]}]
    sweep = load_sweep(write_sweep(tmp_path, base, grid))
    names = [r.name for r in sweep.runs]
    assert names == ["lam1.200_c5_s0_T200", "lam1.100_c5_s0_T200", "lam1.200_c5_s1_T200", "lam1.100_c5_s1_T200",
                     "lam1.2125_c5_s0_T200", "lam1.100_c2_s0_T200", "lam1.2125_c2_s0_T200"]
    run = sweep.runs[-1]
    assert (run.reward_scale, run.clip_strength, run.seed, run.steps) == (1.2125, 2.0, 0, 200)
    assert run.config.allow_above_cliff and run.config.out == str(tmp_path / "out" / "runs" / run.name)
    assert run_name(1.2, 5.0, 0, 200) == "lam1.200_c5_s0_T200"
    assert [r.name for r in select(sweep, "c2")] == names[-2:]
    assert [r.name for r in select(sweep, "lam1.1*")] == ["lam1.100_c5_s0_T200", "lam1.100_c5_s1_T200",
                                                           "lam1.100_c2_s0_T200"]
    with pytest.raises(ListopdError, match="matches none"):
        select(sweep, "c9")
    # a grid key left out takes the base value
    only_lambda = load_sweep(write_sweep(tmp_path, {**base, "steps": 7, "seed": 3}, {"reward_scale": [1.0]}))
    assert [r.name for r in only_lambda.runs] == ["lam1.000_c5_s3_T7"]
    assert only_lambda.config_hash == load_sweep(str(tmp_path / "sweep.yaml")).config_hash


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(extra=1), r"sweep.yaml: unknown key\(s\) 'extra'"),
    (lambda d: d["base"].update(lrr=1), r"sweep.yaml: base: unknown option\(s\) 'lrr'"),
    (lambda d: d["base"].update(out="x"), "set by the sweep"),
    (lambda d: d["grid"].update(lam=[1]), r"sweep.yaml: grid: unknown key\(s\) 'lam'"),
    (lambda d: d["grid"].update(steps=[10, 0]), r"run lam1.100_c5_s0_T0: option 'steps' must be ≥ 1; got 0"),
    (lambda d: d["grid"].update(clip_strength=[5, 0.5]), r"run lam1.100_c0.5_s0_T10"),
    (lambda d: d["grid"].update(seed=[1.5]), "grid key 'seed' needs integers"),
    (lambda d: d["base"].pop("val_tasks"), "val_tasks is required"),
    (lambda d: d["base"].update(teacher="/nonexistent/teacher"), "'teacher' not found"),
    (lambda d: d.pop("out"), "'out' .* is required"),
])
def test_bad_configs_are_refused_before_any_run(tmp_path, change, message):
    data = {"out": str(tmp_path / "out"), "base": fake_base(tmp_path),
            "grid": {"reward_scale": [1.1], "steps": [10]}}
    change(data)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ListopdError, match=message):
        load_sweep(str(path))
    assert main(["sweep", str(path), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()


def test_result_made_with_another_config_is_refused(tmp_path, capsys):
    sweep = load_sweep(write_sweep(tmp_path, fake_base(tmp_path), {"reward_scale": [1.1]}))
    run = sweep.runs[0]
    stored = {"config": {**run.config.__dict__, "lr": 0.5}}
    sweep.result_path(run).parent.mkdir(parents=True)
    sweep.result_path(run).write_text(json.dumps(stored))
    assert main(["sweep", sweep.path]) == 2
    assert "different config (lr differ)" in capsys.readouterr().err


def test_train_seconds_adds_up_across_resumes():
    records = [{"step": 1, "elapsed_s": 1.0}, {"step": 2, "elapsed_s": 2.5},  # first process
               {"step": 3, "elapsed_s": 1.0}, {"step": 4, "elapsed_s": 2.0}]  # resumed: the clock restarted
    assert train_seconds(records) == pytest.approx(4.5)


# ------------------------------------------------------------------------------------------ real runs

def test_tiny_sweep_runs_writes_results_and_skips_on_rerun(world, tmp_path, capsys):
    path = write_sweep(tmp_path, tiny_base(world), {"reward_scale": [1.0, 1.5], "seed": [0, 1], "steps": 2})
    out = tmp_path / "out"

    assert main(["sweep", path, "--dry-run"]) == 0  # nothing finished yet: times 2 steps in a temporary folder
    text = capsys.readouterr().out
    assert sum(line.endswith(" todo") for line in text.splitlines()) == 4
    assert "timed 2 OPD steps of lam1.000_c5_s0_T2" in text
    assert not out.exists(), "a dry run writes nothing"

    assert main(["sweep", path, "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [["[1/4]", "lam1.000_c5_s0_T2"], ["[2/4]", "lam1.500_c5_s0_T2"],
                                                        ["[3/4]", "lam1.000_c5_s1_T2"], ["[4/4]", "lam1.500_c5_s1_T2"]]
    assert all("ETA" in line for line in lines[:4])
    sweep = load_sweep(path)
    plan = json.loads((out / "sweep.json").read_text())
    assert plan["config_hash"] == sweep.config_hash
    assert [r["name"] for r in plan["runs"]] == [r.name for r in sweep.runs]
    for run in sweep.runs:
        result = json.loads(sweep.result_path(run).read_text())
        summary = json.loads((out / "runs" / run.name / "summary.json").read_text())
        assert result["summary"] == summary and 0 <= summary["val_strict_parse_rate"] <= 1
        assert result["config"]["reward_scale"] == run.reward_scale and result["config"]["seed"] == run.seed
        assert result["allow_above_cliff"] is True and result["config"]["allow_above_cliff"] is True
        assert [v["step"] for v in result["validation"]] == [1] and "val_strict_parse_rate" in result["validation"][0]
        assert result["step_time_s"] > 0 and result["sweep_config_hash"] == sweep.config_hash
        started, ended = (datetime.fromisoformat(result[k]) for k in ("started_at", "ended_at"))
        assert started.utcoffset().total_seconds() == 0 and started <= ended
        assert result["code_version"]["listopd"] and "git_commit" in result["code_version"]
        assert run_status(sweep, run) == ("done", 2)
    assert set(result_rates(out, [r.point() for r in sweep.runs]).values()) <= {0.0, 0.25, 0.5, 0.75, 1.0}

    before = {r.name: sweep.result_path(r).read_text() for r in sweep.runs}
    assert main(["sweep", path, "--quiet"]) == 0
    assert capsys.readouterr().out.count("skipped (result exists)") == 4
    assert {r.name: sweep.result_path(r).read_text() for r in sweep.runs} == before

    assert main(["sweep", path, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert sum(line.endswith(" done") for line in text.splitlines()) == 4 and "0 steps left" in text


def test_interrupted_run_resumes_from_its_checkpoint(world, tmp_path, monkeypatch, capsys):
    from listopd.train import metrics_log

    path = write_sweep(tmp_path, tiny_base(world), {"reward_scale": [1.5], "seed": [0], "steps": 2})
    sweep = load_sweep(path)
    run = sweep.runs[0]
    real_write = metrics_log.MetricsLog.write

    def crash_at_step_2(self, record):
        if record["step"] == 2:
            raise KeyboardInterrupt
        real_write(self, record)

    monkeypatch.setattr(metrics_log.MetricsLog, "write", crash_at_step_2)
    assert main(["sweep", path, "--quiet"]) == 130
    monkeypatch.setattr(metrics_log.MetricsLog, "write", real_write)
    assert not sweep.result_path(run).exists()
    assert run_status(sweep, run) == ("partial", 1)
    first_start = json.loads((sweep.run_dir(run) / "sweep_run.json").read_text())["started_at"]
    log = sweep.run_dir(run) / "metrics.jsonl"  # mark the kept record: a resumed run keeps it
    log.write_text("".join(line.rstrip()[:-1] + ', "kept": true}\n' for line in log.read_text().splitlines()))

    assert main(["sweep", path, "--dry-run"]) == 0
    assert "partial (step 1)" in capsys.readouterr().out

    assert main(["sweep", path, "--quiet"]) == 0
    metrics = read_metrics(sweep.run_dir(run))
    assert [(m["step"], m.get("kept", False)) for m in metrics] == [(1, True), (2, False)]
    result = json.loads(sweep.result_path(run).read_text())
    assert result["started_at"] == first_start and result["summary"]["steps"] == 2
    assert [v["step"] for v in result["validation"]] == [1]


def test_dry_run_estimate_from_finished_runs(tmp_path, capsys):
    from listopd.experiment.sweep import dry_run

    sweep = load_sweep(write_sweep(tmp_path, fake_base(tmp_path), {"reward_scale": [1.1, 1.2], "steps": 100}))
    done = sweep.runs[0]
    sweep.result_path(done).parent.mkdir(parents=True)
    sweep.result_path(done).write_text(json.dumps({"config": {}, "train_seconds": 50.0, "steps_logged": 100,
                                                             "step_time_s": 0.5}))
    (sweep.run_dir(sweep.runs[1]) / "checkpoints").mkdir(parents=True)
    plan = dry_run(sweep)
    assert plan["done"] == 1 and plan["partial"] == 1 and plan["remaining_steps"] == 100
    assert plan["step_time_s"] == 0.5 and plan["remaining_s"] == 50.0
    assert plan["step_time_source"] == "from 1 finished run(s)' metrics"
    assert "partial (step 0)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- onset

def test_onset_threshold_rule_and_bracket():
    o = find_onset([1.0, 1.1, 1.2, 1.3], [0.9, 0.8, 0.4, 0.1], threshold=0.5)
    assert (o.lam, o.lower, o.rule, o.complete) == (1.2, 1.1, "threshold", True)
    assert o.bracket() == (1.1, 1.2)
    # the grid is sorted first
    assert find_onset([1.3, 1.0, 1.2, 1.1], [0.1, 0.9, 0.4, 0.8], threshold=0.5).lam == 1.2


def test_onset_drop_rule():
    lams, rates = [1.0, 1.1, 1.2, 1.3], [0.95, 0.9, 0.55, 0.52]
    assert find_onset(lams, rates, threshold=0.5).lam is None  # never below 0.5: no onset without drop
    o = find_onset(lams, rates, threshold=0.5, drop=0.3)
    assert (o.lam, o.lower, o.rule) == (1.2, 1.1, "drop")
    assert find_onset(lams, rates, threshold=0.5, drop=0.35).lam is None  # a drop of exactly 0.35 is not > 0.35
    # threshold is checked first at the same point
    assert find_onset([1.0, 1.1], [0.9, 0.1], threshold=0.5, drop=0.3).rule == "threshold"


def test_onset_at_lowest_point_none_and_missing():
    o = find_onset([1.0, 1.1], [0.2, 0.1], threshold=0.5)
    assert (o.lam, o.lower) == (1.0, None)
    assert find_onset([1.0, 1.1], [0.9, 0.8], threshold=0.5) == find_onset([1.0], [0.9], threshold=0.5)
    assert find_onset([1.0, 1.1], [0.9, 0.8], threshold=0.5).lam is None
    missing = find_onset([1.0, 1.1, 1.2], [0.9, None, 0.1], threshold=0.5)
    assert (missing.lam, missing.complete) == (None, False)
    found_below_gap = find_onset([1.0, 1.1, 1.2], [0.9, 0.1, None], threshold=0.5)  # decided below the gap
    assert (found_below_gap.lam, found_below_gap.complete) == (1.1, True)


def test_onset_table_and_result_files(tmp_path):
    points = [{"name": run_name(lam, c, s, 10), "reward_scale": lam, "clip_strength": c, "steps": 10, "seed": s}
              for c in (2.0, 5.0) for s in (0, 1) for lam in (1.1, 1.2, 1.3)]
    cliff = {(2.0, 0): 1.2, (2.0, 1): 1.3, (5.0, 0): 9.0, (5.0, 1): 1.1}
    (tmp_path / "results").mkdir()
    for p in points:
        rate = 0.1 if p["reward_scale"] >= cliff[(p["clip_strength"], p["seed"])] else 0.9
        record = {"summary": {"val_strict_parse_rate": rate}}
        (tmp_path / "results" / f"{p['name']}.json").write_text(json.dumps(record))
    rates = result_rates(tmp_path, points)
    table = onset_table(points, rates, threshold=0.5)
    assert {k: (o.lam, o.lower) for k, o in table.items()} == {
        (2.0, 10, 0): (1.2, 1.1), (2.0, 10, 1): (1.3, 1.2), (5.0, 10, 0): (None, None), (5.0, 10, 1): (1.1, None)}
    assert grid_step([1.1, 1.2, 1.25, 1.3, 1.35]) == pytest.approx(0.05)


def test_rerun_with_a_calibration_file_skips_and_resumes(world, tmp_path, capsys):
    """With `calibration:` in base, a run folder records what the cliff check read from the file; a re-run
    must still see the same config (it once refused: the file's p and b were stored over cliff_p/cliff_b),
    also for run folders written in that older layout."""
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"version": 1, "p": 0.999, "b": 0.9}))
    base = {**tiny_base(world), "calibration": str(calibration)}
    path = write_sweep(tmp_path, base, {"reward_scale": [1.0, 1.5], "seed": [0], "steps": 1})
    assert main(["sweep", path, "--quiet"]) == 0
    sweep = load_sweep(path)
    stored = json.loads((sweep.run_dir(sweep.runs[0]) / "config.json").read_text())
    assert stored["cliff_p"] is None and stored["cliff_check"]["cliff_p"] == 0.999
    capsys.readouterr()
    assert main(["sweep", path, "--quiet"]) == 0
    assert capsys.readouterr().out.count("skipped (result exists)") == 2

    old_layout = {**stored, "cliff_p": 0.999, "cliff_b": 0.9}  # how earlier versions wrote config.json
    old_layout.pop("cliff_check")
    (sweep.run_dir(sweep.runs[0]) / "config.json").write_text(json.dumps(old_layout))
    sweep.result_path(sweep.runs[0]).unlink()  # and the run has to be looked at again
    assert main(["sweep", path, "--quiet"]) == 0


def test_a_sweep_shares_its_frozen_models_and_a_run_trains_as_it_would_alone(world, tmp_path, capsys):
    """The sweep's FrozenPool: the second run (same teacher, base and tasks) finds every prompt already cached,
    and trains to the same bits as the same run started on its own (a cached prompt scores as a new one)."""
    from listopd.task.tasks import write_tasks

    write_tasks(tmp_path / "four.jsonl", world.train_tasks[:4])  # one batch: every step the same prompts
    base = {**tiny_base(world), "tasks": str(tmp_path / "four.jsonl")}
    path = write_sweep(tmp_path, base, {"reward_scale": [1.5, 2.0], "seed": 0, "steps": 3})
    assert main(["sweep", path, "--quiet"]) == 0
    capsys.readouterr()
    sweep = load_sweep(path)
    first, second = (json.loads(sweep.result_path(r).read_text())["summary"] for r in sweep.runs)
    assert first["prompt_cache"]["teacher"] == {"prompts": 4, "mib": first["prompt_cache"]["teacher"]["mib"],
                                                "hits": 8, "misses": 4}
    assert second["prompt_cache"]["teacher"]["misses"] == 0 and second["prompt_cache"]["base"]["misses"] == 0
    assert second["prompt_cache"]["teacher"]["hits"] == 12

    from listopd.train.opd import run_opd

    alone = run_opd(dataclasses.replace(sweep.runs[1].config, out=str(tmp_path / "alone")), quiet=True)
    assert alone["prompt_cache"]["teacher"]["misses"] == 4
    sweep_metrics = read_metrics(tmp_path / "out" / "runs" / sweep.runs[1].name)
    alone_metrics = read_metrics(tmp_path / "alone")
    keys = ("loss", "grad_norm", "teacher_kl_k3", "rollout_parse_rate")
    assert [[r.get(k) for k in keys] for r in sweep_metrics] == [[r.get(k) for k in keys] for r in alone_metrics]
