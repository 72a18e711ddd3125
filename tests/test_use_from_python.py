"""README "Use from Python": the script shown there runs as shown (SFT teacher and warm start, calibrate,
ListOPD below the predicted cliff) on the tiny presets, in a fresh interpreter and an empty folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_script() -> str:
    section = README.read_text(encoding="utf-8").split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section shows exactly one script"
    return blocks[0]


def test_the_readme_script_runs(tmp_path):
    script = readme_script()
    assert "import listopd" in script and "run_opd" in script and "calibrate_models" in script
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "binding role" in r.stdout and "ListOPD at λ = " in r.stdout
    for run in ("teacher", "warm", "opd"):
        assert (tmp_path / "runs" / run / "final" / "config.json").exists()
    summary = json.loads((tmp_path / "runs" / "opd" / "summary.json").read_text())
    assert summary["steps"] == 4 and 0.0 <= summary["val_strict_parse_rate"] <= 1.0
    calibration = json.loads((tmp_path / "runs" / "calibration" / "calibration.json").read_text())
    assert calibration["version"] == 1 and calibration["n_tasks"] == 8
