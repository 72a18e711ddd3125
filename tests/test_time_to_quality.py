"""The time-to-quality benchmark's quality measure (benchmarks/time_to_quality.py): the exact per-token
KL(student ‖ teacher) on the student's own samples — zero against itself, positive against another model."""

import importlib.util
from pathlib import Path

from listopd.train.models import load_model

_spec = importlib.util.spec_from_file_location(
    "time_to_quality", Path(__file__).resolve().parent.parent / "benchmarks" / "time_to_quality.py")
ttq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ttq)


def test_teacher_kl_is_zero_against_itself_and_positive_against_another_model(world):
    student, teacher = load_model(world.student), load_model(world.teacher)
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    assert abs(ttq.teacher_kl(student, student, prompts, world.tok)) < 1e-6
    assert ttq.teacher_kl(student, teacher, prompts, world.tok) > 0.01


def test_time_to_target_is_the_first_evaluation_at_or_below_it():
    points = [{"train_s": 0.0, "kl": 0.3}, {"train_s": 10.0, "kl": 0.06}, {"train_s": 20.0, "kl": 0.05},
              {"train_s": 30.0, "kl": 0.04}]
    assert ttq.first_at_or_below(points, 0.05) == 20.0
    assert ttq.first_at_or_below(points, 0.01) is None


def test_curve_key_names_the_clip_mode_only_when_it_is_not_the_default():
    assert ttq.curve_key("listopd", "teacher_ratio") == "listopd"
    assert ttq.curve_key("listopd-ahead", "none") == "listopd-ahead (clip none)"
    assert ttq.curve_key("trl-distill", "none") == "trl-distill"
