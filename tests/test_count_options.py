"""Every integer option of every subcommand, walked with 0 and −1 (issue: `calibrate --max-tasks 0` exited 0
with an empty calibration, `--max-tasks -3` silently dropped three tasks).

The integer options are found from the parser itself (an option whose converter turns "7" into the int 7), so
a new option is walked without being listed here. A value is refused with one line on stderr naming the option,
exit 2, and nothing written — unless ZERO_MEANS below says what 0 means for that option, and its help says it
too. −1 is refused everywhere. The YAML route of the config-driven commands (sft, opd, demo, and a sweep's
runs) is walked the same way, field by field.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import pytest
import yaml

from listopd.cli import build_parser, main
from listopd.experiment.demo import DemoConfig
from listopd.train.opd_config import OPDConfig
from listopd.train.sft_config import SFTConfig
from listopd.util.config import field_minimum

# (command, option) -> what 0 means (the option's help must say "0")
ZERO_MEANS = {
    ("sft", "--warmup-steps"): "no warm-up", ("opd", "--warmup-steps"): "no warm-up",
    ("demo", "--opd-warmup-steps"): "no warm-up",
    ("sft", "--eval-every"): "only at the end", ("opd", "--eval-every"): "only at the end",
    ("sft", "--lora-r"): "full fine-tuning", ("opd", "--lora-r"): "full fine-tuning",
    ("sft", "--threads"): "torch's default", ("opd", "--threads"): "torch's default",
    ("constrained", "--threads"): "torch's default", ("serve", "--threads"): "torch's default",
    ("opd", "--top-k"): "off", ("opd", "--role-probe-tasks"): "no per-role instrument",
    ("opd", "--prompt-cache-mb"): "whole-sequence forwards", ("opd", "--rollout-ahead"): "synchronous", ("demo", "--rollout-ahead"): "synchronous",
    ("judge", "--max-requests"): "grade from the cache only", ("judge", "--retries"): "no retries",
    ("serve", "--port"): "any free port",
    # seeds: 0 is a seed like any other (numpy refuses negative ones)
    **{(c, "--seed"): "a seed" for c in ("sft", "opd", "demo", "score", "data amazon", "data synth",
                                         "serve", "constrained")},
}
CONFIGS = {"sft": SFTConfig, "opd": OPDConfig, "demo": DemoConfig}


def _is_int_option(action) -> bool:
    if not action.option_strings or action.type is None:
        return False
    try:
        value = action.type("7")
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return False
    return isinstance(value, int) and not isinstance(value, bool)


def _int_options():
    found = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif _is_int_option(action):
                found.append((" ".join(path), action.option_strings[-1], action))

    walk(build_parser(), [])
    return found


INT_OPTIONS = _int_options()
CASES = [(cmd, flag, value) for cmd, flag, _ in INT_OPTIONS for value in ("0", "-1")]


def test_the_walk_sees_the_options_of_every_kind_of_command():
    names = {(c, f) for c, f, _ in INT_OPTIONS}
    assert len(INT_OPTIONS) >= 70, len(INT_OPTIONS)
    for needle in [("calibrate", "--max-tasks"), ("sft", "--steps"), ("opd", "--guard-window"),
                   ("data synth", "--k"), ("serve", "--port"), ("demo", "--opd-steps"), ("simulate", "--seeds")]:
        assert needle in names
    assert set(ZERO_MEANS) <= names, set(ZERO_MEANS) - names  # no stale row


@pytest.mark.parametrize("cmd,flag,value", CASES, ids=[f"{c}{f}={v}" for c, f, v in CASES])
def test_zero_and_minus_one(cmd, flag, value, tmp_path, monkeypatch, capsys):
    action = next(a for c, f, a in INT_OPTIONS if (c, f) == (cmd, flag))
    if value == "0" and (cmd, flag) in ZERO_MEANS:
        assert action.type("0") == 0
        if flag != "--seed":
            assert "0" in (action.help or ""), f"{cmd} {flag}: 0 is accepted, so its help must say what it means"
        return
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([*cmd.split(), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and repr(value) in err, err
    assert os.listdir(tmp_path) == []


YAML_CASES = [(cmd, name, value) for cmd, cls in CONFIGS.items()
              for name, (minimum) in field_minimum(cls).items()
              if next(f for f in dataclasses.fields(cls) if f.name == name).type in ("int", "int | None")
              for value in (0, -1) if value < minimum]


def test_every_integer_config_field_declares_its_minimum():
    for cls in CONFIGS.values():
        for f in dataclasses.fields(cls):
            if f.type in ("int", "int | None"):
                assert f.metadata.get("at_least") is not None, f"{cls.__name__}.{f.name} has no at_least"
                if f.metadata["at_least"] == 0:
                    assert "0" in f.metadata["help"] or f.name == "seed", f"{cls.__name__}.{f.name}: say what 0 means"
    assert len(YAML_CASES) >= 40


@pytest.mark.parametrize("cmd,name,value", YAML_CASES, ids=[f"{c}.{n}={v}" for c, n, v in YAML_CASES])
def test_yaml_zero_and_minus_one(cmd, name, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({name: value}))
    assert main([cmd, "--config", "cfg.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cfg.yaml" in err and f"'{name}'" in err and f"≥ " in err, err
    assert os.listdir(tmp_path) == ["cfg.yaml"]


def test_config_built_in_python_is_checked_too(tmp_path):
    from listopd.train.sft import run_sft
    from listopd.util.errors import ListopdError

    with pytest.raises(ListopdError, match="steps must be ≥ 1; got 0"):
        run_sft(SFTConfig(tasks="x.jsonl", out=str(tmp_path / "run"), steps=0))
    assert not (tmp_path / "run").exists()


def test_sweep_grid_budget_zero_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for folder in ("s", "t"):
        (tmp_path / folder).mkdir()
    for name in ("x.jsonl", "v.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "out": "sw", "base": {"student": "s", "teacher": "t", "tasks": "x.jsonl", "val_tasks": "v.jsonl"},
        "grid": {"reward_scale": [1.0], "steps": [0]}}))
    assert main(["sweep", "sweep.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep.yaml" in err and "steps" in err, err
    assert sorted(os.listdir(tmp_path)) == ["s", "sweep.yaml", "t", "v.jsonl", "x.jsonl"]
