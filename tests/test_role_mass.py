"""The trainer's per-role keeping mass (train/role_mass.py) is calibrate's measurement, logged at every eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_world import opd_config

from listopd.task.tasks import read_tasks


def test_probe_equals_calibrate_on_the_same_outputs(world):
    from listopd.experiment.calibrate import calibrate
    from listopd.train.models import load_model, model_vocab_size
    from listopd.train.role_mass import RoleProbe

    tasks = read_tasks(world.val)[:4]
    teacher, student = load_model(world.teacher), load_model(world.student)
    cal = calibrate(teacher, student, world.tok, tasks, c=5.0, sources=("reference",), n_boot=10)
    table = cal.role_table()
    probe = RoleProbe(world.tok, tasks, width=model_vocab_size(student))
    for name, model, key in (("teacher", teacher, "p"), ("student", student, "b")):
        got = probe.measure(model)
        assert set(got) == {f"keep/{r}" for r in table}
        for role, row in table.items():
            assert got[f"keep/{role}"] == pytest.approx(row[key], rel=1e-9, abs=1e-12), (name, role)


def test_opd_logs_keeping_mass_at_every_eval_and_in_the_summary(world, tmp_path):
    from listopd.train.opd import run_opd

    cfg = opd_config(world, tmp_path / "run", steps=2, eval_every=1, val_tasks=world.val, eval_tasks=4,
                     role_probe_tasks=2)
    summary = run_opd(cfg, quiet=True)
    rows = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    keys = {k for k in rows[0] if k.startswith("keep/")}
    assert {"keep/quote", "keep/eos", "keep/id_1"} <= keys
    assert all(0.0 <= rows[0][k] <= 1.0 for k in keys)
    assert keys <= set(summary)
    off = run_opd(opd_config(world, tmp_path / "off", steps=1, val_tasks=world.val, eval_tasks=4,
                             role_probe_tasks=0), quiet=True)
    assert not any(k.startswith("keep/") for k in off)


def test_full_vocabulary_fixed_point_in_the_calibration(world):
    """λ = 1 is the teacher's keeping mass and λ = 0 the warm start's, position by position; the predicted parse
    rate is the mean over tasks of the product over the reference output's positions."""
    import numpy as np

    from listopd.core.fixed_points import FULL_VOCAB_LAMBDAS
    from listopd.experiment.calibrate import calibrate
    from listopd.train.models import load_model

    tasks = read_tasks(world.val)[:3]
    seen = []
    cal = calibrate(load_model(world.teacher), load_model(world.student), world.tok, tasks, c=5.0,
                    sources=("reference",), n_boot=20, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]  # progress counts tasks (not vocabulary entries)
    one, zero = FULL_VOCAB_LAMBDAS.index(1.0), FULL_VOCAB_LAMBDAS.index(0.0)
    for pos in cal.positions:
        assert pos.keep_fv[one] == pytest.approx(pos.p, rel=1e-9, abs=1e-15)
        assert pos.keep_fv[zero] == pytest.approx(pos.b, rel=1e-9, abs=1e-15)
    fv = cal.full_vocabulary()
    by_task = {}
    for pos in cal.positions:
        by_task.setdefault(pos.task, []).append(pos.p)
    assert fv["predicted_parse"][one] == pytest.approx(np.mean([np.prod(v) for v in by_task.values()]))
    lo, hi = fv["predicted_parse_ci"][one]
    assert lo <= fv["predicted_parse"][one] <= hi
    assert fv["peak_lambda"] >= 1 and fv["n_outputs"] == 3
    assert set(fv["role_tail"]) >= {"quote", "eos"}
    # the teacher_ratio rest point: the teacher at λ = 1 and the warm start at λ = 0, like q_λ
    capped = fv["teacher_ratio_capped"]
    assert capped["c"] == 5.0
    assert capped["predicted_parse"][one] == pytest.approx(fv["predicted_parse"][one], rel=1e-9)
    for pos in cal.positions:
        assert pos.keep_fv_capped[zero] == pytest.approx(pos.b, rel=1e-6)
    # base_ratio over λ ≥ 1: the teacher at λ = 1; two_sided departs from teacher_ratio nowhere at λ = 1
    base = fv["base_ratio_capped"]
    assert base["lambdas"][0] == 1.0 and base["predicted_parse"][0] == pytest.approx(fv["predicted_parse"][one])
    two = fv["two_sided_capped"]
    assert two["lambdas"] == base["lambdas"] and two["departs_positions"][0] == two["departs_outputs"][0] == 0.0
    assert all(0.0 <= x <= y <= 1.0 for x, y in zip(two["departs_positions"], two["departs_outputs"]))
