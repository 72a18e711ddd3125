"""The single-position simulator: follows the fixed point below λ*, runs away above it, with the real loss."""

import json
import subprocess
import sys

import numpy as np
import pytest

from listopd.core import theory
from listopd.cli import main
from listopd.util.errors import DomainError
from listopd.experiment.simulate import SimConfig, simulate

P, B, C = 0.95, 0.6, 2.0  # a quickly converging point: λ* = 1.283


def _grid_around(lam_star, offsets=(-0.1, -0.02, 0.02, 0.1)):
    return tuple(round(lam_star + d, 4) for d in offsets)


def test_exact_dynamics_sit_on_the_fixed_point_below_and_run_away_above_lambda_star():
    lam_star = float(theory.lambda_star(P, B, C))
    r = simulate(SimConfig(p=P, b=B, c=C, lambdas=_grid_around(lam_star), steps=1000, seeds=1))
    below, above = r.lambdas < lam_star, r.lambdas > lam_star
    # below λ*: the trained modal mass is the fixed point q_λ (to 1e-6 in logit) and stays clip-safe
    assert np.all(np.abs(r.departure[below, 0]) < 1e-6)
    assert not r.left_clip_safe[below].any()
    # above λ*: no equilibrium, the tail collapses far past the fixed point and out of the safe region
    assert np.all(r.departure[above, 0] > 2.0)
    assert r.left_clip_safe[above].all()
    # so the onset is the first grid point above λ*
    assert r.onsets == [float(r.lambdas[above][0])]


def test_without_the_cap_nothing_happens_at_lambda_star():
    lam_star = float(theory.lambda_star(P, B, C))
    r = simulate(SimConfig(p=P, b=B, c=C, lambdas=_grid_around(lam_star), steps=1000, seeds=1,
                           clip_mode="none"))
    assert np.all(np.abs(r.departure) < 1e-6)  # every λ converges to its own fixed point
    assert r.onsets == [None]


def test_sampled_dynamics_find_the_same_onset_and_are_seeded():
    lam_star = float(theory.lambda_star(P, B, C))
    cfg = SimConfig(p=P, b=B, c=C, lambdas=_grid_around(lam_star, (-0.1, 0.1)), steps=1500, seeds=2,
                    dynamics="sampled", samples_per_step=128, optimizer="adam", lr=0.05)
    r = simulate(cfg)
    assert r.onsets == [float(r.lambdas[1])] * 2
    # below λ*, sampling noise keeps q near (not on) the fixed point
    assert np.all(np.abs(r.departure[0]) < 0.3)
    again = simulate(cfg)
    assert np.array_equal(again.modal_mass, r.modal_mass)


def test_finite_budget_shifts_the_onset_up():
    """Near q → 1 the runaway is slow: a short budget shows the departure later on the grid."""
    p, b, c = 0.999, 0.9, 3.0
    lam_star = float(theory.lambda_star(p, b, c))
    grid = tuple(np.round(np.arange(1.2, 1.45, 0.025), 3))
    short = simulate(SimConfig(p=p, b=b, c=c, lambdas=grid, steps=1500, seeds=1)).onsets[0]
    long = simulate(SimConfig(p=p, b=b, c=c, lambdas=grid, steps=6000, seeds=1)).onsets[0]
    assert long is not None and lam_star < long
    assert short is None or short > long


def test_kary_modal_class_uses_class_masses():
    lam_star = float(theory.lambda_star(P, B, C))
    r = simulate(SimConfig(p=P, b=B, c=C, lambdas=_grid_around(lam_star), steps=1000, seeds=1,
                           n_modal=8, n_tail=16))
    assert r.onsets == [float(r.lambdas[r.lambdas > lam_star][0])]


@pytest.mark.parametrize("kwargs, word", [
    (dict(p=1.0), "p"), (dict(c=1.0), "c"), (dict(b=1.0), "b"),
    (dict(dynamics="noisy"), "dynamics"), (dict(lambdas=(1.0, -1.0)), "λ"), (dict(steps=0), "steps"),
])
def test_bad_config_is_refused(kwargs, word):
    with pytest.raises(DomainError, match=word):
        SimConfig(**kwargs)


def test_p_equal_b_runs_and_finds_no_onset():
    """p = b: λ* = +∞ (one answer everywhere); the simulated position keeps its mass at every λ."""
    r = simulate(SimConfig(p=0.95, b=0.95, c=5.0, lambdas=(1.0, 2.0, 4.0), steps=300, seeds=1))
    assert r.lambda_star == float("inf") and r.onsets == [None]


def test_cli_json_and_plot(tmp_path, capsys):
    png = tmp_path / "sim.png"
    out = tmp_path / "sim.json"
    code = main(["simulate", "--p", str(P), "--b", str(B), "--c", "2", "3", "--lambdas", "1.2:1.4:0.1",
                 "--steps", "300", "--json", "--plot", str(png), "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert [r["config"]["c"] for r in printed["results"]] == [2.0, 3.0]
    first = printed["results"][0]
    assert first["lambda_star"] == pytest.approx(float(theory.lambda_star(P, B, 2.0)))
    assert [row["lambda"] for row in first["rows"]] == [1.2, 1.3, 1.4]
    assert {"onsets", "onset_interval", "onset_definition", "steps"} <= set(first)
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("argv", [
    ["simulate", "--p", "1.5"],
    ["simulate", "--c", "0.5"],
    ["simulate", "--lambdas", "2:1:0.1"],
    ["simulate", "--steps", "many"],
])
def test_cli_bad_input_one_line_exit_2(argv):
    proc = subprocess.run([sys.executable, "-m", "listopd", *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in proc.stderr
