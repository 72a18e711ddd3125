"""The demo pipeline end to end at toy sizes: every stage writes its output, a re-run skips finished stages,
and the report names the predicted λ* and the five models. (Speed and the science are for `listopd demo`.)"""

import json

import pytest

from killed_parent import helper_outlives_killed_parent, needs_proc
from listopd.experiment.demo import (DemoConfig, convergence_notes, demo_lambdas, pair_warnings, run_demo,
                                     run_row_name, validation_points)


def test_demo_pipeline_runs_and_resumes(tmp_path, capsys):
    cfg = DemoConfig(out=str(tmp_path / "demo"), n_users=120, n_items=150, teacher_steps=3, warm_steps=2,
                     opd_steps=2, above_steps=1, plain_run=True, batch_size=4, calibration_tasks=4,
                     eval_tasks=4)
    result = run_demo(cfg)
    out = tmp_path / "demo"
    for path in ("data/train.jsonl", "tokenizer/tokenizer.json", "teacher/final/model.safetensors",
                 "warm/final/model.safetensors", "calibration/calibration.json", "calibration/calibration.png",
                 "opd_plain/summary.json", "opd_below/summary.json", "opd_above/summary.json", "evaluation.json", "opd_curves.png",
                 "mechanism.png", "report.md"):
        assert (out / path).exists(), path
    lam_star = result["lambda_star"]
    lambdas = result["lambdas"]
    assert lambdas["plain"] == 1.0 and lambdas["below"] < lam_star < lambdas["above"]
    fv_onset = json.loads((out / "calibration" / "calibration.json").read_text())["full_vocabulary"]["onset_lambda"]
    assert lambdas["below"] == round(1 + 0.5 * (min(lam_star, fv_onset or lam_star) - 1), 3)
    steps = {side: json.loads((out / f"opd_{side}" / "summary.json").read_text())["steps"] for side in lambdas}
    assert steps == {"plain": 2, "below": 2, "above": 1}
    from listopd.task.tasks import read_tasks
    assert {t.k for t in read_tasks(out / "data" / "train.jsonl")} == {cfg.k}  # the demo's K (5), not synth's 8
    sft_batch = {name: json.loads((out / name / "config.json").read_text())["batch_size"] for name in ("teacher", "warm")}
    assert sft_batch == {"teacher": cfg.teacher_batch_size, "warm": cfg.sft_batch_size} == {"teacher": 16, "warm": 8}
    sft_lr = {name: json.loads((out / name / "config.json").read_text())["lr"] for name in ("teacher", "warm")}
    assert sft_lr == {"teacher": cfg.teacher_lr, "warm": cfg.sft_lr} == {"teacher": 5e-4, "warm": 1e-3}
    assert json.loads((out / "opd_above" / "config.json").read_text())["allow_above_cliff"] is True
    report = (out / "report.md").read_text()
    assert f"{lam_star:.3f}" in report and report.count("| ListOPD λ=") == 3
    assert len(result["models"]) == 5
    for row in result["models"].values():  # sampled (T = 1, fixed seed) and greedy test metrics
        assert 0 <= row["strict_parse_rate"] <= 1 and 0 <= row["greedy"]["strict_parse_rate"] <= 1
    assert json.loads((out / "opd_below" / "config.json").read_text())["estimator"] == "expected"
    assert "strict parse (greedy)" in report
    warm = result["models"]["warm start (SFT, tiny-student)"]
    for side in ("plain", "below", "above"):  # each run's sampled parse minus the warm start's, same tasks
        lift = result["lift_over_warm"][side]
        run = next(v for k, v in result["models"].items() if k.startswith(f"ListOPD λ={lambdas[side]} "))
        assert lift["points"] == pytest.approx(100 * (run["strict_parse_rate"] - warm["strict_parse_rate"]))
        assert lift["n"] == 4
        assert lift["ci"][0] <= lift["points"] <= lift["ci"][1]
    assert "mechanism.png" in report and "paired bootstrap" in report
    teacher = result["models"]["teacher (SFT, tiny-teacher)"]["strict_parse_rate"]
    assert teacher < 0.5  # three SFT steps: the teacher has not learned the format, and the demo says so, early
    log = capsys.readouterr().out
    warning = f"the teacher keeps the format in {100 * teacher:.0f}% of its samples"
    assert f"warning: {warning}" in log and log.index(warning) < log.index("ListOPD λ =")
    assert f"**Warning**: {warning}" in report

    capsys.readouterr()
    again = run_demo(cfg)  # every stage is done: nothing is retrained
    log = capsys.readouterr().out
    assert "SFT teacher (" not in log and "ListOPD λ" not in log and "calibrating" not in log
    assert again["lambda_star"] == lam_star


def test_a_teacher_that_rarely_keeps_the_format_when_sampled_is_named():
    assert pair_warnings(0.847, 0.18) == []  # seed 0's pair (Zen 4)
    assert pair_warnings(0.5, 0.1) == []
    (warning,) = pair_warnings(0.36, 0.08)  # seed 4's: its below run gave +20.7 points
    assert warning.startswith("the teacher keeps the format in 36% of its samples (the warm start in 8%)")


def _evaluation(teacher: float, runs: dict[str, tuple[float, float]]) -> dict:
    rows = {"teacher (SFT, tiny-teacher)": {"strict_parse_rate": teacher},
            "warm start (SFT, tiny-student)": {"strict_parse_rate": 0.107}}
    rows |= {run_row_name(side, lam): {"strict_parse_rate": got} for side, (lam, got) in runs.items()}
    return {"models": rows, "lambdas": {side: lam for side, (lam, _) in runs.items()}}


def test_a_run_meant_to_converge_that_ends_far_under_its_teacher_is_named_with_the_longer_command():
    # seed 0's pair (Zen 4): below 69.3% against its teacher's 71.3%; its above run collapsed, which is not a note
    assert convergence_notes(_evaluation(0.713, {"below": (1.444, 0.693), "above": (2.388, 0.0)}), "runs/demo") == []
    # seed 1's: below 18.0% against 73.3% (82.0% after 360 steps)
    (note,) = convergence_notes(_evaluation(0.733, {"below": (1.427, 0.18), "above": (2.354, 0.427)}), "runs/n_s1")
    assert note.startswith("ListOPD λ = 1.427 (below λ*) ends at 18% sampled, its teacher at 73%")
    assert note.endswith("listopd opd --config runs/n_s1/opd_below/config.json --steps 360 --out runs/n_s1/opd_below_360")
    # the plain run is checked too; a gap of exactly 25 points is not a note
    notes = convergence_notes(_evaluation(0.75, {"plain": (1.0, 0.4), "below": (1.3, 0.5)}), "d")
    assert [n.split(" (")[0] for n in notes] == ["ListOPD λ = 1.0"]


def test_a_title_format_synth_does_not_know_is_refused_before_any_work():
    from listopd.util.errors import ListopdError

    with pytest.raises(ListopdError, match="title_format must be one of full, short, plain, got 'fancy'"):
        DemoConfig(title_format="fancy").validate()
    DemoConfig(title_format="full", k=8, history_len=3, min_history=2).validate()  # the K = 8 demo of before
    with pytest.raises(ListopdError, match="teacher_lr and sft_lr must be finite numbers > 0, got 0.0 and 0.001"):
        DemoConfig(teacher_lr=0.0).validate()
    with pytest.raises(ListopdError, match="teacher_lr and sft_lr must be finite numbers > 0, got 0.0005 and inf"):
        DemoConfig(sft_lr=float("inf")).validate()


def test_the_below_run_sits_below_both_predictors():
    cfg = DemoConfig()
    assert demo_lambdas(cfg, lam_star=2.5, fv_onset=1.75) == {"below": 1.375, "above": 3.0}  # the demo pair's case
    assert demo_lambdas(cfg, lam_star=1.5, fv_onset=4.0) == {"below": 1.25, "above": 2.0}
    assert demo_lambdas(cfg, lam_star=1.5, fv_onset=None) == {"below": 1.25, "above": 2.0}
    with_plain = demo_lambdas(DemoConfig(plain_run=True), lam_star=2.0, fv_onset=None)
    assert with_plain == {"plain": 1.0, "below": 1.5, "above": 2.5} and list(with_plain)[0] == "plain"


def test_the_sft_stages_side_by_side_write_both_and_give_the_cores_back(tmp_path):
    import torch

    from listopd.experiment.demo import DemoConfig, _run_sft_stages, _second_process, evaluate_on_test
    from listopd.task.data.synth import make_synth_tasks
    from listopd.task.tasks import write_tasks
    from listopd.task.tokenizer import task_texts, train_tokenizer
    from listopd.train.scaffold import DEFAULT_THREADS
    from listopd.train.sft_config import SFTConfig

    tasks = make_synth_tasks(n_users=40, n_items=60, history_len=2, min_history=1, seed=0)
    write_tasks(tmp_path / "train.jsonl", tasks)
    train_tokenizer(task_texts(tasks), vocab_size=2048).save_pretrained(str(tmp_path / "tok"))
    test = (tmp_path / "train.jsonl", 3)
    for side_by_side in (False, True):
        todo = {name: SFTConfig(out=str(tmp_path / f"{side_by_side}" / name), model=preset, steps=2, batch_size=2,
                                micro_batch_size=2, tasks=str(tmp_path / "train.jsonl"), tokenizer=str(tmp_path / "tok"),
                                eval_every=0, save_every=100)
                for name, preset in (("teacher", "tiny-teacher"), ("warm", "tiny-student"))}
        with _second_process(DemoConfig(sft_side_by_side=side_by_side)) as second:
            assert (second is None) == (not side_by_side or DEFAULT_THREADS < 2)
            _run_sft_stages(todo, second, test)
        for name in todo:
            assert json.loads((tmp_path / f"{side_by_side}" / name / "summary.json").read_text())["steps"] == 2
        # beside the warm start, the second process also evaluated the teacher on the test tasks
        teacher_eval = tmp_path / f"{side_by_side}" / "teacher" / "test_evaluation.json"
        assert teacher_eval.exists() == (second is not None)
        assert torch.get_num_threads() == DEFAULT_THREADS
    row = evaluate_on_test(tmp_path / "False" / "teacher", *test)  # computed here, then kept
    assert len(row["valid"]) == len(row["task_ids"]) == 3 and row["strict_parse_rate"] == sum(row["valid"]) / 3
    assert evaluate_on_test(tmp_path / "False" / "teacher", *test) == row
    assert len(evaluate_on_test(tmp_path / "False" / "teacher", test[0], 2)["valid"]) == 2  # other tasks: again


@needs_proc
def test_the_second_process_exits_when_the_demo_is_killed(tmp_path):
    import os
    import textwrap

    demo = tmp_path / "demo.py"
    demo.write_text(textwrap.dedent("""
        import os, time
        from listopd.experiment.demo import DemoConfig, _second_process

        if __name__ == "__main__":  # (the second process is spawned: it imports this file)
            with _second_process(DemoConfig(sft_side_by_side=True)) as second:
                print(second.submit(os.getpid).result(), flush=True)
                time.sleep(600)
    """))
    # two threads: with one the demo makes no second process (_second_process yields None and the script fails)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    assert not helper_outlives_killed_parent(demo, env), "the demo's second process outlived the killed demo"


def test_the_curves_figure_gets_the_final_evaluation_from_the_summary(tmp_path):
    # The trainer logs evaluations at eval_every into metrics.jsonl, but the one after the last step goes to
    # summary.json only; the figure drew validation up to step 220 of a 240-step run before this.
    run = tmp_path / "opd_below"
    run.mkdir()
    rows = [{"step": 1, "rollout_parse_rate": 0.0}, {"step": 2, "rollout_parse_rate": 0.5, "val_strict_parse_rate": 0.25},
            {"step": 3, "rollout_parse_rate": 0.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"steps": 3, "val_strict_parse_rate": 0.75}))
    assert validation_points(run) == [(2, 0.25), (3, 0.75)]
    (run / "summary.json").write_text(json.dumps({"steps": 2, "val_strict_parse_rate": 0.25}))  # already a row
    assert validation_points(run) == [(2, 0.25)]
    (run / "summary.json").write_text(json.dumps({"steps": 3, "val_strict_parse_rate": None}))  # no final evaluation
    assert validation_points(run) == [(2, 0.25)]
