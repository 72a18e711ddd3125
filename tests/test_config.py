"""listopd.util.config with the trainer configs: YAML < flags, unknown keys, wrong types, meaningless and
contradictory settings refused with their reason; through the CLI, exit 2 with one line on stderr.
None of these tests loads a model: validation happens before anything is read or written."""

import argparse
import json

import pytest

from listopd.cli import main
from listopd.util.config import add_config_arguments, config_from_dict, load_config
from listopd.util.errors import ListopdError
from listopd.train.opd_config import OPDConfig
from listopd.train.sft_config import SFTConfig

REQUIRED = {"student": "s", "teacher": "t", "tasks": "train.jsonl", "out": "run"}


def write_yaml(tmp_path, text: str, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return load_config(cls, parser.parse_args(argv))


YAML = """\
student: runs/warm/final
teacher: runs/teacher/final
tasks: data/train.jsonl
out: runs/opd
reward_scale: 1.5
clip_strength: 4
lr: 0.5
steps: 7
bf16: true
cliff_p: 0.9
cliff_b: 0.5
"""


# --------------------------------------------------------------------------------------------- loading

def test_yaml_loads_with_types(tmp_path):
    cfg = parse(OPDConfig, ["--config", write_yaml(tmp_path, YAML)])
    assert cfg.student == "runs/warm/final" and cfg.out == "runs/opd"
    assert cfg.reward_scale == 1.5 and cfg.steps == 7 and cfg.bf16 is True
    assert cfg.clip_strength == 4.0 and isinstance(cfg.clip_strength, float)  # int in YAML → float field
    assert (cfg.cliff_p, cfg.cliff_b) == (0.9, 0.5)
    assert cfg.eps_low == 0.2 and cfg.batch_size == 8  # untouched defaults


def test_yaml_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """`lr: 1e-5` is how learning rates are written; PyYAML's YAML 1.1 rules read it as a string."""
    cfg = parse(OPDConfig, ["--config", write_yaml(tmp_path, YAML + "lr: 1e-5\nclip_strength: 5E0\n")])
    assert cfg.lr == 1e-5 and cfg.clip_strength == 5.0
    with pytest.raises(ListopdError, match="expected a number"):  # a quoted string stays a string
        parse(OPDConfig, ["--config", write_yaml(tmp_path, YAML + "lr: '1e-5'\n", name="q.yaml")])
    with pytest.raises(ListopdError, match="expected an integer"):  # and an exponent is no integer
        parse(OPDConfig, ["--config", write_yaml(tmp_path, YAML + "steps: 1e3\n", name="s.yaml")])


def test_flags_override_yaml(tmp_path):
    path = write_yaml(tmp_path, YAML)
    cfg = parse(OPDConfig, ["--config", path, "--lr", "0.01", "--steps", "3", "--bf16", "false",
                            "--out", "elsewhere", "--reward-scale", "1.25"])
    assert cfg.lr == 0.01 and cfg.steps == 3 and cfg.bf16 is False and cfg.out == "elsewhere"
    assert cfg.reward_scale == 1.25
    assert cfg.clip_strength == 4.0  # not given as a flag: the YAML value stays
    # flags alone (no YAML) work too
    cfg = parse(OPDConfig, ["--student", "s", "--teacher", "t", "--tasks", "x", "--out", "o"])
    assert cfg.reward_scale == 1.0 and cfg.lr == 1e-5


def test_flags_override_yaml_through_cli_parser(tmp_path):
    from listopd.cli import build_parser

    args = build_parser().parse_args(["opd", "--config", write_yaml(tmp_path, YAML), "--lr", "0.02"])
    cfg = load_config(OPDConfig, args)
    assert cfg.lr == 0.02 and cfg.reward_scale == 1.5


def test_unknown_yaml_key_refused_and_named(tmp_path):
    path = write_yaml(tmp_path, YAML + "reward_scal: 2\nlearning_rate: 1\n")
    with pytest.raises(ListopdError) as e:
        parse(OPDConfig, ["--config", path])
    msg = str(e.value)
    assert "'reward_scal'" in msg and "'learning_rate'" in msg and path in msg
    # a dashed (flag-style) key is not a YAML key either
    with pytest.raises(ListopdError, match="'reward-scale'"):
        config_from_dict(OPDConfig, {**REQUIRED, "reward-scale": 2.0})


@pytest.mark.parametrize("key,value,expect", [
    ("reward_scale", "'big'", "expected a number"),
    ("reward_scale", "true", "expected a number"),
    ("steps", "1.5", "expected an integer"),
    ("steps", "'10'", "expected an integer"),
    ("bf16", "'yes'", "expected true or false"),
    ("bf16", "1", "expected true or false"),
    ("student", "3", "expected a string"),
    ("lr", "null", "must not be null"),
])
def test_wrong_type_refused(tmp_path, key, value, expect):
    path = write_yaml(tmp_path, YAML + f"{key}: {value}\n")  # a later duplicate key wins in YAML
    with pytest.raises(ListopdError) as e:
        parse(OPDConfig, ["--config", path])
    assert expect in str(e.value) and f"'{key}'" in str(e.value)


def test_nullable_field_accepts_null(tmp_path):
    cfg = parse(OPDConfig, ["--config", write_yaml(tmp_path, YAML.replace("cliff_p: 0.9\ncliff_b: 0.5\n", "")
                                                   + "cliff_p: null\ncliff_b: null\nbase: null\n")])
    assert cfg.cliff_p is None and cfg.base is None


def test_missing_required_and_bad_files(tmp_path):
    with pytest.raises(ListopdError, match="missing required option.*teacher"):
        config_from_dict(OPDConfig, {"student": "s", "tasks": "t", "out": "o"})
    with pytest.raises(ListopdError, match="not found"):
        parse(OPDConfig, ["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(ListopdError, match="mapping"):
        parse(OPDConfig, ["--config", write_yaml(tmp_path, "- a\n- b\n")])
    with pytest.raises(ListopdError, match="not valid YAML"):
        parse(OPDConfig, ["--config", write_yaml(tmp_path, "student: [unclosed\n")])


# --------------------------------------------------------------------------------------------- meaning

OPD_BAD = [
    ({"reward_scale": 0.0}, "reward_scale"),
    ({"reward_scale": -1.0}, "reward_scale"),
    ({"reward_scale": float("nan")}, "reward_scale"),
    ({"reward_scale": float("inf")}, "reward_scale"),
    ({"clip_strength": 1.0}, "clip_strength"),
    ({"clip_strength": 0.5}, "clip_strength"),
    ({"clip_strength": 1.0, "clip_mode": "dual_clip"}, "clip_strength"),
    ({"eps_low": 0.0}, "eps_low"),
    ({"eps_low": 1.0}, "eps_low"),
    ({"eps_high": 1.5}, "eps_high"),
    ({"eps_high": -0.1}, "eps_high"),
    ({"clip_mode": "ratio"}, "clip_mode"),
    ({"cliff_p": 0.9}, "cliff_p and cliff_b go together"),
    ({"cliff_b": 0.5}, "cliff_p and cliff_b go together"),
    ({"cliff_p": 0.9, "cliff_b": 0.5, "calibration": "cal.json"}, "either calibration or cliff_p"),
    ({"base": "runs/base"}, "base is ignored at reward_scale 1"),
    ({"steps": 0}, "steps"),
    ({"lr": 0.0}, "lr"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"temperature": 0.0}, "temperature"),
    ({"guard_margin": 0.0}, "guard_margin"),
    ({"guard_margin": 1.0}, "guard_margin"),
    ({"guard_window": 0}, "guard_window"),
    ({"schedule": "linear"}, "schedule"),
    ({"ppo_epochs": 0}, "ppo_epochs"),
    ({"grad_clip": 0.0}, "grad_clip"),
]


@pytest.mark.parametrize("values,reason", OPD_BAD, ids=[str(v) for v, _ in OPD_BAD])
def test_meaningless_opd_settings_refused_with_reason(values, reason):
    with pytest.raises(ListopdError) as e:
        config_from_dict(OPDConfig, {**REQUIRED, **values})
    assert reason in str(e.value)


def test_meaningful_corner_settings_accepted():
    # c is not used by clip_mode none, so c ≤ 1 is not refused there
    config_from_dict(OPDConfig, {**REQUIRED, "clip_strength": 1.0, "clip_mode": "none"})
    # a base is meaningful away from λ = 1, also below 1
    config_from_dict(OPDConfig, {**REQUIRED, "base": "b", "reward_scale": 1.5})
    config_from_dict(OPDConfig, {**REQUIRED, "base": "b", "reward_scale": 0.5})
    config_from_dict(OPDConfig, {**REQUIRED, "calibration": "cal.json"})
    config_from_dict(OPDConfig, {**REQUIRED, "cliff_p": 0.9, "cliff_b": 0.5, "guard_margin": 0.2})
    # OPD has no batch/micro-batch divisibility rule (micro-batches are slices; the last may be short)
    config_from_dict(OPDConfig, {**REQUIRED, "batch_size": 6, "micro_batch_size": 4})


SFT_REQUIRED = {"tasks": "train.jsonl", "out": "run"}
SFT_BAD = [
    ({"batch_size": 6, "micro_batch_size": 4}, "multiple of micro_batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"steps": 0}, "steps"),
    ({"lr": -1.0}, "lr"),
    ({"max_train_tokens": 0}, "max_train_tokens"),
    ({"save_every": 0}, "save_every"),
    ({"schedule": "step"}, "schedule"),
    ({"lora_r": -1}, "lora_r"),
]


@pytest.mark.parametrize("values,reason", SFT_BAD, ids=[str(v) for v, _ in SFT_BAD])
def test_meaningless_sft_settings_refused_with_reason(values, reason):
    with pytest.raises(ListopdError) as e:
        config_from_dict(SFTConfig, {**SFT_REQUIRED, **values})
    assert reason in str(e.value)
    assert str(e.value).startswith(("invalid config:", "config: option"))


def test_sft_yaml_and_flags(tmp_path):
    path = write_yaml(tmp_path, "tasks: a.jsonl\nout: r\nbatch_size: 8\nmicro_batch_size: 4\nsteps: 5\n")
    cfg = parse(SFTConfig, ["--config", path, "--micro-batch-size", "2"])
    assert (cfg.batch_size, cfg.micro_batch_size, cfg.steps) == (8, 2, 5)
    with pytest.raises(ListopdError, match="multiple of micro_batch_size"):
        parse(SFTConfig, ["--config", path, "--micro-batch-size", "3"])


# --------------------------------------------------------------------------------------------- CLI

def _cli(capsys, argv):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse-level errors
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


OPD_FLAGS = ["--student", "s", "--teacher", "t", "--tasks", "x.jsonl"]


@pytest.mark.parametrize("extra,needle", [
    (["--reward-scale", "0"], "reward_scale"),
    (["--reward-scale", "-2"], "reward_scale"),
    (["--clip-strength", "1"], "clip_strength"),
    (["--eps-low", "0"], "eps_low"),
    (["--eps-high", "1"], "eps_high"),
    (["--cliff-p", "0.9"], "cliff_p and cliff_b"),
    (["--cliff-p", "0.9", "--cliff-b", "0.5", "--calibration", "c.json"], "either calibration"),
    (["--base", "b"], "base is ignored"),
    (["--steps", "abc"], "expected an integer, got 'abc'"),
    (["--bf16", "maybe"], "expected true/false"),
])
def test_cli_opd_refuses_with_one_line(capsys, tmp_path, extra, needle):
    out = tmp_path / "run"
    rc, stdout, err = _cli(capsys, ["opd", *OPD_FLAGS, "--out", str(out), *extra])
    assert rc == 2
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert needle in err and "error" in err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()  # nothing written


def test_cli_unknown_yaml_key_and_wrong_type(capsys, tmp_path):
    path = write_yaml(tmp_path, YAML + "temprature: 0.5\n")
    rc, _, err = _cli(capsys, ["opd", "--config", path])
    assert rc == 2 and err.count("\n") == 1 and "'temprature'" in err and path in err
    assert err.startswith("listopd opd: error:")
    path = write_yaml(tmp_path, YAML + "steps: many\n", name="b.yaml")
    rc, _, err = _cli(capsys, ["opd", "--config", path])
    assert rc == 2 and err.count("\n") == 1 and "'steps'" in err and "integer" in err


def test_cli_sft_refuses_batch_not_multiple(capsys, tmp_path):
    rc, _, err = _cli(capsys, ["sft", "--tasks", "x.jsonl", "--out", str(tmp_path / "r"),
                               "--batch-size", "6", "--micro-batch-size", "4"])
    assert rc == 2 and err.count("\n") == 1 and "multiple of micro_batch_size" in err
    assert err.startswith("listopd sft: error:")


def test_cli_calibration_file_errors(capsys, tmp_path):
    """A bad calibration file is a user error too (one line, exit 2), found before any model is loaded."""
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"p": 0.9}))
    rc, _, err = _cli(capsys, ["opd", *OPD_FLAGS, "--out", str(tmp_path / "r"), "--calibration", str(bad)])
    assert rc == 2 and err.count("\n") == 1 and "calibration" in err and str(bad) in err
    rc, _, err = _cli(capsys, ["opd", *OPD_FLAGS, "--out", str(tmp_path / "r"),
                               "--calibration", str(tmp_path / "missing.json")])
    assert rc == 2 and err.count("\n") == 1 and "not found" in err
    assert not (tmp_path / "r").exists()


def test_every_config_field_has_help_shown_by_help():
    """Help sits beside each field (util.config.option) and `--help` shows it, for every trainer/demo option."""
    from listopd.cli import build_parser
    from listopd.experiment.demo import DemoConfig
    from listopd.train.opd_config import OPDConfig
    from listopd.train.sft_config import SFTConfig
    from listopd.util.config import field_help

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, cls in (("opd", OPDConfig), ("sft", SFTConfig), ("demo", DemoConfig)):
        helps = field_help(cls)
        assert all(helps.values()), f"{cls.__name__}: no help for {[k for k, v in helps.items() if not v]}"
        shown = {a.dest: a.help for a in subparsers[command]._actions}
        for name, text in helps.items():
            assert shown[name].startswith(text.replace("%", "%%")), (command, name)
