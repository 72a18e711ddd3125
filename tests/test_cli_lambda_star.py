"""`listopd lambda-star`: table, JSON, plot, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from listopd.core import theory as th
from listopd.cli import main


def run_json(capsys, *argv):
    assert main(["lambda-star", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_table(capsys):
    assert main(["lambda-star", "--p", "0.99934", "--c", "2", "5"]) == 0
    out = capsys.readouterr().out
    assert "1.0947" in out and "1.2199" in out


def test_json_base_neutral(capsys):
    d = run_json(capsys, "--p", "0.99934", "--c", "5")
    assert d["lambda_star"] == pytest.approx(1.220, abs=0.002)
    assert d["lambda_star"] == d["lambda_star_base_neutral"]
    assert d["b"] == 0.5 and d["b_given"] is False and d["c"] == 5.0
    assert d["clip_safe_boundary"] == pytest.approx((5 - 1 + 0.99934) / 5)


def test_json_with_base_and_several_c(capsys):
    d = run_json(capsys, "--p", "0.999", "--b", "0.9", "--c", "3", "5")
    assert d["c"] == [3.0, 5.0]
    assert d["lambda_star"] == pytest.approx([th.lambda_star(0.999, 0.9, c) for c in (3, 5)])
    assert d["lambda_star"][0] == pytest.approx(1.233, abs=5e-4)
    assert d["lambda_star_base_neutral"] == pytest.approx([th.lambda_star_base_neutral(0.999, c) for c in (3, 5)])
    assert len(d["clip_safe_boundary"]) == 2


def test_json_infinite_is_null(capsys):
    d = run_json(capsys, "--p", "0.9", "--b", "0.95", "--c", "5")
    assert d["lambda_star"] is None and d["lambda_star_base_neutral"] > 1


def test_plot(tmp_path, capsys):
    png = tmp_path / "cliff.png"
    assert main(["lambda-star", "--p", "0.99934", "--b", "0.9", "--c", "2", "5", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,needle", [
    (["--p", "1.5", "--c", "5"], "p must be in the open interval"),
    (["--p", "0.9", "--c", "0.9"], "c must be"),
    (["--p", "nan", "--c", "5"], "p must not be NaN"),
])
def test_domain_errors_one_line_exit_2(capsys, argv, needle):
    assert main(["lambda-star", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and err.startswith("listopd lambda-star: error:")


@pytest.mark.parametrize("argv", [["--p", "abc", "--c", "5"], ["--p", "0.9"], ["--p", "0.9", "--c"]])
def test_argparse_errors_one_line_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(["lambda-star", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_subprocess_exit_code_and_single_line():
    r = subprocess.run([sys.executable, "-m", "listopd", "lambda-star", "--p", "1.5", "--c", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "listopd lambda-star: error: p must be in the open interval (0, 1); got 1.5"


def test_p_equal_b_one_answer_everywhere(capsys, tmp_path):
    """p = b: λ* = +∞ (no cliff) in the table, in JSON (null), in the trainer's cliff check and in the report's
    reading of a calibration file; nothing exits 2."""
    from types import SimpleNamespace

    from listopd.experiment.report import _stored_lambda_star
    from listopd.train.cliff import cliff_check

    assert main(["lambda-star", "--p", "0.9", "--b", "0.9", "--c", "5"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[3] == "inf"
    d = run_json(capsys, "--p", "0.9", "--b", "0.9", "--c", "5")
    assert d["lambda_star"] is None  # JSON's +∞
    assert _stored_lambda_star(d["lambda_star"]) == float("inf")
    assert run_json(capsys, "--p", "0.5", "--c", "5")["lambda_star"] is None
    cfg = SimpleNamespace(cliff_pb=lambda: (0.9, 0.9), clip_strength=5.0, clip_mode="teacher_ratio",
                          reward_scale=10.0, allow_above_cliff=False)
    assert cliff_check(cfg)["lambda_star"] == float("inf")  # never refused
