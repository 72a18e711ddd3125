"""scripts/format_recovery.py: the dip and the first step back at the level, from a run's metrics log; a run
seen in an earlier folder is skipped; per (arm, λ) the range of those steps, with the runs that never came back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("format_recovery", ROOT / "scripts" / "format_recovery.py")
format_recovery = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(format_recovery)


def test_recovery_finds_the_dip_and_the_first_window_back_at_the_level():
    rates = [0.2, 0.2, 0.0, 0.0, 0.0, 0.6, 0.8, 0.8]
    # window 2: means end at steps 2..8: 0.2, 0.1, 0.0, 0.0, 0.3, 0.7, 0.8
    assert format_recovery.recovery(rates, window=2, early=4, level=0.5) == (0.0, 7)
    assert format_recovery.recovery(rates, window=2, early=2, level=0.5) == (0.2, 7)
    assert format_recovery.recovery(rates, window=2, early=8, level=0.9) == (0.0, None)


def _run(folder: Path, name: str, rates: list[float], final: float) -> None:
    run = folder / name
    run.mkdir(parents=True)
    run.joinpath("metrics.jsonl").write_text(
        "".join(json.dumps({"step": i + 1, "rollout_parse_rate": r}) + "\n" for i, r in enumerate(rates)))
    run.joinpath("summary.json").write_text(json.dumps({"val_strict_parse_rate": final}))


def test_main_skips_repeated_runs_and_reports_never(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a, "lam2.000_c5_s0_T300", [0.0, 0.0, 1.0, 1.0], 0.9)  # 2-step mean 0.5 at step 3
    _run(a, "lam2.000_c5_s1_T300", [0.0, 0.0, 0.0], 0.1)
    _run(b, "lam2.000_c5_s0_T300", [0.0, 0.0, 0.0], 0.0)  # a repeat: skipped, so s0 stays "back at step 3"
    _run(b, "lam2.000_c5_s0_T300_aware", [1.0, 1.0, 1.0], 0.95)
    _run(b, "lam2.000_c2_s0_T300", [0.0, 1.0, 1.0], 0.8)  # another clip, the same budget: a row of its own
    format_recovery.main([str(a), str(b), "--window", "2", "--early", "3"])
    out = capsys.readouterr().out
    assert out.count("lam2.000_c5_s0_T300 |") == 1
    assert "| c5 T300 | 2 | 2 | 3–3 (1 never) |" in out
    assert "| c5 T300_aware | 2 | 1 | 2–2 |" in out
    assert "| c2 T300 | 2 | 1 | 2–2 |" in out
