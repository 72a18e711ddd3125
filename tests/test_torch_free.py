"""The front door stays light: `listopd --help`, every subcommand's `--help`, `lambda-star`, `score`, `data stats`,
`prereg lock`/`check` and `report` run with torch (and transformers, accelerate, peft) made unimportable; so does
`import listopd` and its public names that need no model. Each case runs in a fresh interpreter, since the test
process itself has torch loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_prereg import make_sweep, rates_for, write_results

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "accelerate", "peft")
# None in sys.modules makes `import torch` raise ImportError, wherever it is attempted
PRELUDE = f"import sys\nfor m in {HEAVY!r}:\n    sys.modules[m] = None\n"


def run_without_torch(code: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + code], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"})


def cli_without_torch(*argv: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return run_without_torch(f"from listopd.cli import main\nraise SystemExit(main({list(argv)!r}))", cwd=cwd)


def subcommands() -> list[list[str]]:
    from listopd.cli import COMMANDS

    nested = {"data": ["amazon", "synth", "stats"], "prereg": ["lock", "check"], "tokenizer": ["train"]}
    out = [[name] for name in COMMANDS]
    out += [[name, sub] for name, subs in nested.items() for sub in subs]
    return out


def test_the_blocker_blocks():
    r = run_without_torch("import torch")
    assert r.returncode == 1 and "import of torch halted" in r.stderr


def test_top_level_help():
    r = cli_without_torch("--help")
    assert r.returncode == 0, r.stderr
    assert "lambda-star" in r.stdout and "opd" in r.stdout


@pytest.mark.parametrize("argv", subcommands(), ids=" ".join)
def test_every_subcommand_help(argv):
    r = cli_without_torch(*argv, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: listopd " + " ".join(argv))


def test_lambda_star():
    r = cli_without_torch("lambda-star", "--p", "0.99934", "--b", "0.5", "--c", "5", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["lambda_star"] == pytest.approx(1.2199, abs=1e-4)


def test_score_and_data_stats(tmp_path):
    from listopd.task.data.synth import make_synth_tasks
    from listopd.task.prompts import target_text
    from listopd.task.tasks import write_tasks

    tasks = make_synth_tasks(n_items=120, n_users=30, k=4, history_len=2, min_history=1, seed=0)
    write_tasks(tmp_path / "tasks.jsonl", tasks)
    (tmp_path / "out.jsonl").write_text("".join(json.dumps({"id": t.id, "output": target_text(t)}) + "\n"
                                                for t in tasks))
    r = cli_without_torch("score", "--tasks", str(tmp_path / "tasks.jsonl"), "--outputs", str(tmp_path / "out.jsonl"),
                          "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["strict_parse_rate"] == 1.0
    r = cli_without_torch("data", "stats", str(tmp_path / "tasks.jsonl"))
    assert r.returncode == 0, r.stderr
    assert str(len(tasks)) in r.stdout


def test_prereg_lock_and_check(tmp_path):
    from listopd.experiment.sweep import load_sweep

    path = make_sweep(tmp_path)
    assert cli_without_torch("prereg", "lock", path).returncode == 0
    sweep = load_sweep(path)
    write_results(sweep, rates_for(sweep, {}))
    r = cli_without_torch("prereg", "check", path)
    assert r.returncode in (0, 1), r.stderr  # a verdict either way; 2 would be a refusal or a crash
    assert "content hash ok" in r.stdout


def test_report_of_the_committed_experiment(tmp_path):
    r = cli_without_torch("report", str(ROOT / "docs" / "experiments" / "tiny_pair"), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report.md").read_text().startswith("#")
    assert (tmp_path / "parse_rate.png").stat().st_size > 0


def test_import_listopd_and_light_names():
    r = run_without_torch("import listopd\n"
                          "print(listopd.lambda_star(0.99934, 0.5, 5.0), listopd.OPDConfig.__name__,"
                          " listopd.SFTConfig.__name__, listopd.read_tasks.__name__, listopd.score.__name__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1:] == ["OPDConfig", "SFTConfig", "read_tasks", "score"]
