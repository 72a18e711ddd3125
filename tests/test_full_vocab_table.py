"""scripts/full_vocab_table.py on a committed calibration (round 2's pair R): one column per λ, the rows read
straight from the calibration's full_vocabulary block, the lumped row from core.theory."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from listopd.core import theory

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("full_vocab_table", ROOT / "scripts" / "full_vocab_table.py")
full_vocab_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(full_vocab_table)
CAL = ROOT / "docs" / "experiments" / "issue19" / "caps" / "pairR_calibration.json"


def test_table_rows_come_from_the_calibration():
    cal = json.loads(CAL.read_text())
    text = full_vocab_table.table(cal, [1.0, 2.0, 4.0])
    rows = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")[1:] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| λ")}
    fv, grid = cal["full_vocabulary"], cal["full_vocabulary"]["lambdas"]
    assert rows["id role, tail of the full-vocabulary fixed point"] == [
        f"{fv['role_tail']['id'][grid.index(lam)]:.1e}" for lam in (1.0, 2.0, 4.0)]
    p, b = cal["roles"]["id"]["p"], cal["roles"]["id"]["b"]
    assert rows["id role, tail of the lumped (two-class) fixed point"] == [
        f"{1 - float(theory.fixed_point(lam, p, b)):.1e}" for lam in (1.0, 2.0, 4.0)]
    parse = rows[f"predicted parse Π_t keep_t (mean over {fv['n_outputs']} outputs)"]
    assert parse == [f"{fv['predicted_parse'][grid.index(lam)]:.2f}" for lam in (1.0, 2.0, 4.0)]
    # at λ = 1 the two fixed points are the same distribution (the teacher's), so the id tails agree
    assert rows["id role, tail of the full-vocabulary fixed point"][0] == \
        rows["id role, tail of the lumped (two-class) fixed point"][0]


def test_lambda_off_the_grid_is_refused():
    with pytest.raises(SystemExit, match="not in the calibration's grid"):
        full_vocab_table.table(json.loads(CAL.read_text()), [1.1])
