"""`listopd report`: a hand-made sweep (6 λ × 3 seeds × 1 c, parse rates that collapse past λ = 1.25),
a calibration and the tests' verdicts → report.md and its figures; partial and missing inputs."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from listopd.core import theory
from listopd.cli import main
from listopd.experiment.report import build_report
from listopd.experiment.sweep import run_name

LAMBDAS = [1.0, 1.1, 1.2, 1.25, 1.3, 1.4]
SEEDS = [0, 1, 2]
# per seed, the first λ with parse rate below 0.5: seeds 0 and 1 collapse at 1.3, seed 2 already at 1.25
ONSETS = {0: 1.3, 1: 1.3, 2: 1.25}
P, B = 0.99934, 0.8075
LAMBDA_STAR = float(theory.lambda_star(P, B, 5.0))  # 1.2734
LAMBDA_STAR_BN = float(theory.lambda_star_base_neutral(P, 5.0))  # 1.2199


def parse_rate(lam: float, seed: int) -> float:
    if lam >= ONSETS[seed]:
        return 0.08 + 0.02 * seed
    return 0.62 + 0.25 * (lam - 1.0) + 0.01 * seed


def write_result(folder: Path, lam: float, seed: int, c: float = 5.0, steps: int = 200) -> None:
    rate = parse_rate(lam, seed)
    ndcg_parsed = 0.60 + 0.01 * seed
    name = run_name(lam, c, seed, steps)
    result = {  # the layout of listopd.experiment.sweep.result_record
        "version": 1, "name": name,
        "grid_point": {"name": name, "reward_scale": lam, "clip_strength": c, "steps": steps, "seed": seed},
        "config": {"reward_scale": lam, "clip_strength": c, "steps": steps, "seed": seed, "clip_mode": "teacher_ratio",
                   "student": "runs/warm/final", "teacher": "runs/teacher/final"},
        "summary": {"steps": steps, "stop_reason": "steps", "val_strict_parse_rate": rate,
                    "val_ndcg@1_parsed": ndcg_parsed, "val_ndcg@1_strict": ndcg_parsed * rate},
        "validation": [{"step": steps // 2, "val_strict_parse_rate": rate}],
        "train_seconds": 600.0, "step_time_s": 3.0,
        "started_at": "2025-01-01T00:00:00+00:00", "ended_at": "2025-01-01T00:10:00+00:00",
        "code_version": {"listopd": "0.1.0", "git_commit": "abc123def4567890", "git_dirty": False},
    }
    (folder / f"{name}.json").write_text(json.dumps(result))


def calibration() -> dict:
    return {"version": 1, "c": 5.0, "binding_role": "id", "p": P, "b": B,
            "lambda_star": LAMBDA_STAR, "lambda_star_ci": [1.2512, 1.2967], "lambda_star_base_neutral": LAMBDA_STAR_BN,
            "lambda_star_base_neutral_ci": [1.2101, 1.2288],
            "n_tasks": 64, "n_positions": 1200, "failure_roles": {"ok": 20, "duplicate_id@id_3": 44},
            "roles": {"id": {"n": 512, "p": P, "b": B, "lambda_star": LAMBDA_STAR,
                             "lambda_star_base_neutral": LAMBDA_STAR_BN},
                      "colon": {"n": 64, "p": 0.99999, "b": 0.9999, "lambda_star": 2.71,
                                "lambda_star_base_neutral": 1.14},
                      "quote": {"n": 640, "p": 0.9, "b": 0.95, "lambda_star": None,
                                "lambda_star_base_neutral": 1.9}}}


LOCKED_AT = "2024-12-31T00:00:00+00:00"
ONSET = {"threshold": 0.5, "drop": None, "definition": "smallest grid λ whose ... < 0.5"}
PREREG = {"version": 1, "locked_at": LOCKED_AT, "onset": ONSET, "lambda_star_form": "pb",
          "tests": {"fine_grid": {"prediction": "at c = 5, T = 200: the union of the brackets contains λ*"}}}
# the layout of listopd.experiment.prereg.check's prereg_result.json
VERDICTS = {"checked_at": "2025-01-02T00:00:00+00:00", "locked_at": LOCKED_AT, "partial": False, "missing": [],
            "onset": ONSET, "overall": "fail", "tests": [
    {"name": "fine_grid", "status": "pass", "passed": True, "predicted": LAMBDA_STAR,
     "window": [LAMBDA_STAR, LAMBDA_STAR], "observed": [1.2, 1.3], "detail": "[1.2, 1.3] contains λ* = 1.2734"},
    {"name": "budget_extension", "status": "fail", "passed": False, "predicted": LAMBDA_STAR, "window": [1.22, None],
     "observed": {"median_T200": 1.3, "median_T800": None}, "detail": "median onset T2 missing"},
    {"name": "small_clip", "status": "incomplete", "passed": None, "predicted": 1.0947,
     "window": [1.05, 1.15], "observed": None, "detail": "some seeds' onsets are undetermined (missing results)"},
]}


@pytest.fixture
def sweep(tmp_path) -> Path:
    folder = tmp_path / "sweep"
    (folder / "results").mkdir(parents=True)
    for lam in LAMBDAS:
        for seed in SEEDS:
            write_result(folder / "results", lam, seed)
    (folder / "calibration.json").write_text(json.dumps(calibration()))
    (folder / "prereg_result.json").write_text(json.dumps(VERDICTS))
    (folder / "prereg.json").write_text(json.dumps(PREREG))
    return folder


def linked_pngs(report: Path) -> list[Path]:
    names = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report.read_text())
    return [report.parent / n for n in names]


def assert_real_image(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file(), path
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small"
    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 300
    assert float(np.std(img[..., :3])) > 0.05, f"{path} is nearly blank"


def test_full_report(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    size = tmp_path / "size.json"
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "summary.json").write_text(json.dumps(
        {"val_strict_parse_rate": 0.97, "val_ndcg@1_parsed": 0.66, "val_ndcg@1_strict": 0.64}))
    size.write_text(json.dumps([
        {"name": "ListOPD student λ=1.2", "parameters": 1_700_000_000, "strict_parse_rate": 0.948,
         "ndcg@1_parsed": 0.61, "ndcg@1_strict": 0.578},
        {"name": "SFT teacher", "parameters": 8_000_000_000, "summary": "teacher/summary.json"},
        {"name": "SFT warm start", "parameters": 1_700_000_000, "strict_parse_rate": 0.335,
         "ndcg@1_parsed": 0.60, "ndcg@1_strict": 0.201},
    ]))
    assert main(["report", str(sweep), "--size-axis", str(size), "--out", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out
    report = out / "report.md"
    text = report.read_text()
    for heading in ("## What the data says", "## Pre-registered tests", "## Calibration", "## Size axis",
                    "## Per-λ numbers"):
        assert heading in text
    assert "1.2734" in text  # the predicted λ*
    assert "seed 0: 1.3, seed 1: 1.3, seed 2: 1.25" in text  # the onsets built in
    assert "The cliff interval (the union of the seeds' brackets) is [1.2, 1.3]" in text
    assert "which lies inside it" in text
    # the calibration table, binding role marked
    assert "| **id** (binding) | 512 | 0.999340 | 0.807500 | 1.2734 | 1.2199 |" in text
    assert "| quote | 640 | 0.900000 | 0.950000 | ∞ | 1.9000 |" in text
    # the locked predictions and the verdicts
    assert "locked at 2024-12-31T00:00:00+00:00, before the first run started" in text
    assert "- 1. fine-grid cliff interval: at c = 5, T = 200: the union of the brackets contains λ*" in text
    assert "overall **FAIL**" in text
    assert "| 1. fine-grid cliff interval | **pass** | 1.273 | [1.273, 1.273] | [1.2, 1.3] |" in text
    assert "| 2. budget extension | **FAIL** |" in text
    assert "| 3. small-clip cross-prediction | incomplete |" in text
    assert "1 of 3 passed; failed: budget_extension; incomplete (missing results): small_clip" in text
    # the size axis, one row read from a summary file
    assert "| SFT teacher | 8B | 0.970 | 0.660 | 0.640 |" in text
    assert "| SFT warm start | 1.7B | 0.335 |" in text
    pngs = linked_pngs(report)
    assert {p.name for p in pngs} == {"parse_rate.png", "ndcg.png", "onsets.png"}
    for png in pngs:
        assert_real_image(png)
    assert "Missing or incomplete" not in text


def test_default_out_and_calibration_png(sweep):
    from listopd.experiment.calibrate import plot_roles

    cal_dir = sweep.parent / "cal"
    cal_dir.mkdir()
    (cal_dir / "calibration.json").write_text(json.dumps(calibration()))
    plot_roles(calibration(), str(cal_dir / "calibration.png"))
    report = build_report(sweep, calibration=str(cal_dir / "calibration.json"))
    assert report == sweep / "report" / "report.md"
    assert "calibration.png" in {p.name for p in linked_pngs(report)}
    copied = sweep / "report" / "calibration.png"
    assert copied.read_bytes() == (cal_dir / "calibration.png").read_bytes()


def test_partial_sweep_and_missing_inputs(tmp_path):
    folder = tmp_path / "sweep"
    (folder / "results").mkdir(parents=True)
    for lam in LAMBDAS[:4]:
        for seed in SEEDS[:2]:
            if (lam, seed) != (1.1, 1):
                write_result(folder / "results", lam, seed)
    (folder / "results" / "torn.json").write_text('{"config": {"reward_scale"')
    unfinished = {"config": {"reward_scale": 1.3, "clip_strength": 5, "steps": 200, "seed": 0}, "summary": {}}
    (folder / "results" / "running.json").write_text(json.dumps(unfinished))
    report = build_report(folder)
    text = report.read_text()
    assert "Missing or incomplete" in text
    assert "no calibration file" in text
    assert "torn.json: unreadable" in text
    assert "running.json: no final strict parse rate" in text
    assert "λ 1.1 seed 1" in text  # the hole in the grid
    assert "Not evaluated: no readable prereg_result.json" in text
    assert "not evaluated (no prereg_result.json)" in text
    assert "no prediction is available" in text
    assert "the report's default" in text  # no locked onset rule anywhere
    # seed 0's λ = 1.3 run is unfinished and seed 1 has no λ = 1.1 result: both onsets stay undetermined
    assert "seed 0: undetermined (no result at λ = 1.3), seed 1: undetermined (no result at λ = 1.1)" in text
    assert "no size-axis file" in text.lower()
    for png in linked_pngs(report):
        assert_real_image(png)


def test_empty_sweep_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    text = build_report(folder).read_text()
    assert "no results folder" in text
    assert "There are no runs to describe." in text
    assert linked_pngs(folder / "report" / "report.md") == []
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_plan_and_locked_onset_rule(sweep):
    """sweep.json names planned runs without a result; prereg.json's onset rule is the one applied."""
    plan = [{"name": f"extra{seed}", "reward_scale": 1.5, "clip_strength": 5.0, "steps": 200, "seed": seed}
            for seed in SEEDS]
    (sweep / "sweep.json").write_text(json.dumps({"runs": plan}))
    # threshold 0.05 (never reached) and drop 0.58: seeds 0 and 1 drop by 0.60 and 0.59 at λ = 1.3; seed 2
    # drops by only 0.57 (0.69 → 0.12 at λ = 1.25), so it has no onset up to 1.4, and the planned λ = 1.5
    # has no result: undetermined
    (sweep / "prereg.json").write_text(json.dumps({**PREREG, "lambda_star_form": "base_neutral",
                                                   "onset": {"threshold": 0.05, "drop": 0.58}}))
    text = build_report(sweep).read_text()
    assert "strict parse rate is < 0.05, or lower than at the grid point below by more than 0.58" in text
    assert "(from prereg.json)" in text
    assert "seed 0: 1.3, seed 1: 1.3, seed 2: undetermined (no result at λ = 1.5)" in text
    assert "3 (λ, seed) cells have no result: λ 1.5 seed 0, λ 1.5 seed 1, λ 1.5 seed 2" in text
    # the locked form is the base-neutral one: it is the tested prediction, with its own interval
    assert "the predicted λ*(p,c) is 1.2199 (95% interval [1.210, 1.229])" in text
    assert "which lies below it" in text  # the bracket union is [1.25, 1.3]


def test_report_reads_what_sweep_and_prereg_write(tmp_path):
    """The real formats: a sweep YAML with a prereg section, `listopd prereg lock`, result files in
    listopd.experiment.sweep's layout (no training), `listopd prereg check`, then the report."""
    import yaml

    from listopd.experiment.sweep import load_sweep, utc_now

    for name in ("student", "teacher"):
        (tmp_path / name).mkdir()
    for name in ("train.jsonl", "val.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "calibration.json").write_text(json.dumps(calibration()))
    base = {"student": str(tmp_path / "student"), "teacher": str(tmp_path / "teacher"),
            "tasks": str(tmp_path / "train.jsonl"), "val_tasks": str(tmp_path / "val.jsonl")}
    prereg = {"calibration": str(tmp_path / "calibration.json"), "onset_threshold": 0.5, "onset_drop": None,
              "fine_grid": {"clip": 5, "budget": 200}}
    config = {"out": str(tmp_path / "out"), "base": base, "prereg": prereg,
              "grid": {"reward_scale": LAMBDAS, "seed": SEEDS, "clip_strength": 5, "steps": 200}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    sweep = load_sweep(str(tmp_path / "sweep.yaml"))
    assert main(["prereg", "lock", sweep.path]) == 0
    for run in sweep.runs:
        rate = parse_rate(run.reward_scale, run.seed)
        record = {"name": run.name, "grid_point": run.point(), "sweep_config_hash": sweep.config_hash,
                  "summary": {"val_strict_parse_rate": rate}, "started_at": utc_now(), "ended_at": utc_now()}
        sweep.result_path(run).parent.mkdir(parents=True, exist_ok=True)
        sweep.result_path(run).write_text(json.dumps(record))
    assert main(["prereg", "check", sweep.path]) == 0  # λ* = 1.2734 lies in the brackets' union [1.2, 1.3]
    text = build_report(sweep.out).read_text()
    assert "seed 0: 1.3, seed 1: 1.3, seed 2: 1.25" in text
    assert "which lies inside it" in text
    assert "| 1. fine-grid cliff interval | **pass** |" in text and "overall **PASS**" in text
    assert "before the first run started" in text and "(from prereg.json)" in text
    assert "No NDCG@1 values in the results." in text
    assert "cells have no result" not in text


def test_onsets_name_each_seeds_own_grid_and_narrow_intervals_keep_their_width():
    from listopd.experiment.report import OnsetRule, RunResult, ci_text, group_onsets, onset_text

    def run(lam, seed, parse):
        return RunResult(name=f"{lam}_{seed}", lam=lam, c=5.0, budget=60, seed=seed, parse=parse,
                         ndcg_parsed=None, ndcg_strict=None, config={}, summary={})

    # seed 0 runs a coarse extension to λ = 10 and collapses there; seed 1 stops at λ = 2.5 without an onset
    runs = [run(1.0, 0, 0.5), run(2.5, 0, 0.5), run(10.0, 0, 0.1), run(1.0, 1, 0.5), run(2.5, 1, 0.48)]
    plan = [{"reward_scale": r.lam, "seed": r.seed} for r in runs]  # what the sweep planned for each seed
    info = group_onsets(runs, plan, OnsetRule(0.15, 0.15, "test"))
    assert info.per_seed[0].lam == 10.0
    assert info.per_seed[1].lam is None and info.per_seed[1].complete
    assert info.last_at == {0: 10.0, 1: 2.5}
    assert onset_text(info.per_seed[1], info.missing_at[1], info.last_at[1]) == "none up to λ = 2.5"
    assert ci_text((1.6686, 1.6694)) == "[1.6686, 1.6694]"  # three decimals would print [1.669, 1.669]
    assert ci_text((1.210, 1.229)) == "[1.210, 1.229]"


def test_onset_rule_from_the_command_line_only_without_a_locked_one(sweep, tmp_path):
    # no locked rule: --onset-threshold decides. Parse rates fall to ~0.1 at the onsets; a threshold of 0.05
    # finds none, the default 0.5 finds them
    bare = tmp_path / "bare"
    (bare / "results").mkdir(parents=True)
    for lam in LAMBDAS:
        for seed in SEEDS:
            write_result(bare / "results", lam, seed)
    assert main(["report", str(bare), "--onset-threshold", "0.05"]) == 0
    text = (bare / "report" / "report.md").read_text()
    assert "given on the command line" in text
    assert "seed 0: none up to λ = 1.4" in text
    # a drop of more than 0.3 below the grid point under it is an onset even above the threshold
    assert main(["report", str(bare), "--onset-threshold", "0.05", "--onset-drop", "0.3"]) == 0
    assert "seed 0: 1.3, seed 1: 1.3, seed 2: 1.25" in (bare / "report" / "report.md").read_text()
    # a locked rule wins over the command line
    assert main(["report", str(sweep), "--onset-threshold", "0.05"]) == 0
    text = (sweep / "report" / "report.md").read_text()
    assert "(from prereg.json)" in text and "given on the command line" not in text
    assert main(["report", str(bare), "--onset-drop", "0.3"]) == 2


def test_mechanism_figure_from_logged_keeping_mass(sweep):
    """Runs whose metrics logs hold keep/<role> records get the mechanism section and figure; the figure is
    drawn for the roles the calibration has (binding role first)."""
    for lam in LAMBDAS:
        name = run_name(lam, 5.0, 0, 200)
        run = sweep / "runs" / name
        run.mkdir(parents=True)
        target = 1 - float(theory.fixed_point(lam, P, B))
        rows = [{"step": s, "keep/id": 1 - ((1 - B) * (1 - s / 200) + target * s / 200), "keep/quote": 0.99}
                for s in (50, 100, 150)]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (run / "summary.json").write_text(json.dumps({"steps": 200, "keep/id": 1 - target, "keep/quote": 0.99}))
    report = build_report(sweep)
    text = report.read_text()
    assert "## Mechanism: tail mass per role during training" in text and "roles: id, quote" in text
    png = sweep / "report" / "mechanism.png"
    assert png in linked_pngs(report)
    assert_real_image(png)


def test_id_slot_figure_and_table_show_a_stuck_slot(sweep):
    """Per-slot records (keep/id_1, keep/id_2, ...) get a figure of their own and a table of each run's last tail
    per slot, so a run stuck on a wrong token at one slot (a flat tail at k/n) is visible and named."""
    for lam, seed in [(lam, 0) for lam in LAMBDAS] + [(1.4, 1)]:
        run = sweep / "runs" / run_name(lam, 5.0, seed, 200)
        run.mkdir(parents=True)
        stuck = lam >= 1.3 and seed == 0  # these end certain of a wrong token at slot 2 on 5 of 32 probe tasks
        rows = [{"step": s, "keep/id": 0.99, "keep/id_1": 1.0, "keep/id_2": 1 - 5 / 32 if stuck else 1 - 0.5 / s}
                for s in (50, 100, 150)]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = build_report(sweep)
    text = report.read_text()
    assert "### The id slots one by one" in text and "every seed" in text
    table = [line for line in text.splitlines() if line.startswith("| lam")]
    assert len(table) == len(LAMBDAS) + 1  # the id slots take every seed (the role figure the first only)
    for line in table:
        lam, seed = float(line.split("|")[2]), int(line.split("_s")[1].split("_")[0])
        assert line.split("|")[-2].strip() == ("0.156" if lam >= 1.3 and seed == 0 else "0.003")
    png = sweep / "report" / "id_slots.png"
    assert png in linked_pngs(report)
    assert_real_image(png)


def test_no_id_slot_figure_without_per_slot_records(sweep):
    for lam in LAMBDAS:
        run = sweep / "runs" / run_name(lam, 5.0, 0, 200)
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"step": 50, "keep/id": 0.9}) + "\n")
    text = build_report(sweep).read_text()
    assert "## Mechanism" in text and "id slots one by one" not in text
    assert not (sweep / "report" / "id_slots.png").exists()


def test_mechanism_section_says_why_it_is_empty(sweep):
    text = build_report(sweep).read_text()
    assert "No run logged per-role keeping mass" in text


def test_off_base_arms_are_drawn_as_their_own_groups(sweep, tmp_path):
    """Runs on an off-base axis (contract-aware extrapolation, another learning rate: pre-registered tests 7 and
    4) are groups of their own, with their own onsets: never merged into the base's seeds nor left out."""
    for lam in LAMBDAS:
        for seed in SEEDS:
            path = sweep / "results" / f"{run_name(lam, 5.0, seed, 200)}.json"
            record = json.loads(path.read_text())
            for suffix, axis, rate in (("_aware", {"contract_aware": True}, 0.9),
                                       ("_lr0.0001", {"lr": 1e-4}, 0.3 if lam >= 1.4 else 0.8)):
                arm = json.loads(json.dumps(record))
                arm["name"] = arm["grid_point"]["name"] = record["name"] + suffix
                arm["grid_point"].update(axis)
                arm["summary"]["val_strict_parse_rate"] = rate
                (sweep / "results" / f"{arm['name']}.json").write_text(json.dumps(arm))
    report = build_report(sweep, tmp_path / "out")
    text = report.read_text()
    assert "off the base" not in text and "not drawn" not in text
    assert not [p for p in problem_lines(text) if "_aware" in p or "_lr" in p]  # the arms are not problems
    assert "54 runs read" in text
    for title in ("c = 5, budget 200 steps", "c = 5, budget 200 steps, contract-aware",
                  "c = 5, budget 200 steps, lr 0.0001"):
        assert f"### {title}\n" in text, title
    # one finding per arm, each from its own seeds: the base's bracket union [1.2, 1.3] and the lr arm's
    # [1.3, 1.4] are never pooled into one interval [1.2, 1.4]
    findings = finding_lines(text)
    assert set(findings) == {"c = 5, budget 200 steps", "c = 5, budget 200 steps, contract-aware",
                             "c = 5, budget 200 steps, lr 0.0001"}
    base, aware, slow = (findings[t] for t in ("c = 5, budget 200 steps", "c = 5, budget 200 steps, contract-aware",
                                               "c = 5, budget 200 steps, lr 0.0001"))
    assert "seed 0: 1.3, seed 1: 1.3, seed 2: 1.25" in base and "is [1.2, 1.3]" in base
    assert "no seed's strict parse rate met the onset rule" in aware
    assert "seed 0: 1.4, seed 1: 1.4, seed 2: 1.4" in slow and "is [1.3, 1.4]" in slow
    assert "[1.2, 1.4]" not in text
    assert "Onsets: seed 0: none up to λ = 1.4, seed 1: none up to λ = 1.4, seed 2: none up to λ = 1.4." in text
    for png in linked_pngs(report):
        assert_real_image(png)


def problem_lines(text: str) -> list[str]:
    """The bullets under "Missing or incomplete:" in the report's Inputs section."""
    if "Missing or incomplete:" not in text:
        return []
    block = text.split("Missing or incomplete:", 1)[1].split("\n## ", 1)[0]
    return [line[2:] for line in block.splitlines() if line.startswith("- ")]


def finding_lines(text: str) -> dict[str, str]:
    """group title → its bullet under "What the data says"."""
    block = text.split("## What the data says", 1)[1].split("\n## ", 1)[0]
    return {line.split("**")[1]: line for line in block.splitlines() if line.startswith("- **")}


def test_off_base_arms_of_a_real_sweep_plan(tmp_path):
    """The formats `listopd sweep` writes: a grid with `contract_aware: [true, false]` (issue 19's test 7) and a
    block at another lr and budget (round 2's test 4), its sweep.json plan, result files from each run's point.
    Every finished run is drawn in its arm; a planned run without a result is named under its own arm and leaves
    only that arm's onset undetermined."""
    import yaml

    from listopd.experiment.sweep import load_sweep, plan_record

    for name in ("student", "teacher"):
        (tmp_path / name).mkdir()
    for name in ("train.jsonl", "val.jsonl"):
        (tmp_path / name).write_text("")
    base = {"student": str(tmp_path / "student"), "teacher": str(tmp_path / "teacher"),
            "tasks": str(tmp_path / "train.jsonl"), "val_tasks": str(tmp_path / "val.jsonl")}
    grid = [{"reward_scale": LAMBDAS, "seed": SEEDS, "clip_strength": 5, "steps": 200, "contract_aware": [True, False]},
            {"reward_scale": LAMBDAS, "seed": [0], "clip_strength": 5, "steps": 600, "lr": 1e-4}]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "base": base, "grid": grid}))
    sweep = load_sweep(str(tmp_path / "sweep.yaml"))
    (sweep.out / "results").mkdir(parents=True)
    (sweep.out / "sweep.json").write_text(json.dumps(plan_record(sweep)))
    (sweep.out / "calibration.json").write_text(json.dumps(calibration()))
    missing = run_name(1.25, 5.0, 2, 200, contract_aware=True)  # planned, not finished
    for run in sweep.runs:
        if run.name == missing:
            continue
        aware = run.contract_aware is True
        rate = 0.9 if aware and run.reward_scale < 1.4 else 0.2 if aware else parse_rate(run.reward_scale, run.seed)
        record = {"name": run.name, "grid_point": run.point(), "sweep_config_hash": sweep.config_hash,
                  "summary": {"val_strict_parse_rate": rate}}
        sweep.result_path(run).write_text(json.dumps(record))
    assert {r.name for r in sweep.runs} >= {"lam1.000_c5_s0_T200_aware", "lam1.000_c5_s0_T600_lr0.0001"}

    report = build_report(sweep.out)
    text = report.read_text()
    assert f"{len(sweep.runs) - 1} runs read" in text
    # the only problem with the runs: the unfinished one, named under its own arm (the rest: inputs not made here)
    assert problem_lines(text) == [
        "c = 5, budget 200 steps, contract-aware: 1 (λ, seed) cells have no result: λ 1.25 seed 2",
        "locked predictions: prereg.json not found",
        "test verdicts: prereg_result.json not found (tests not evaluated)",
        "no size-axis file (pass --size-axis): the size table has the sweep's student only"]
    findings = finding_lines(text)
    assert list(findings) == ["c = 5, budget 200 steps", "c = 5, budget 200 steps, contract-aware",
                              "c = 5, budget 600 steps, lr 0.0001"]
    assert "seed 0: 1.3, seed 1: 1.3, seed 2: 1.25" in findings["c = 5, budget 200 steps"]
    assert "Undetermined onsets" not in findings["c = 5, budget 200 steps"]
    aware = findings["c = 5, budget 200 steps, contract-aware"]
    assert "seed 0: 1.4, seed 1: 1.4, seed 2: undetermined (no result at λ = 1.25)" in aware
    assert "Undetermined onsets: 1 of 3 seeds" in aware and "is [1.3, 1.4]" in aware
    assert "(1 of 1 seeds have an onset; seed 0: 1.3)" in findings["c = 5, budget 600 steps, lr 0.0001"]
    for title in findings:
        assert f"### {title}\n" in text, title
    for png in linked_pngs(report):
        assert_real_image(png)


def test_variants_follow_the_off_base_axes_of_the_prereg_tests():
    """A run's variant is the same as another's exactly when `prereg_spec.on_axes` puts them on the same axes,
    so the report's arms are the series the pre-registered tests read; contract_aware false is only written by a
    sweep whose base is contract-aware (runs named _plain), and is an arm of its own there."""
    from listopd.experiment.prereg_spec import on_axes
    from listopd.experiment.report import group_title, run_from_result, variant_of

    points = [{}, {"contract_aware": True}, {"contract_aware": False}, {"lr": 1e-4},
              {"lr": 1e-4, "contract_aware": True}]
    labels = ["", "contract-aware", "plain", "lr 0.0001", "lr 0.0001, contract-aware"]
    assert [variant_of(p) for p in points] == labels
    for p in points:
        assert [variant_of(q) == variant_of(p) for q in points] == [on_axes(q, p) for q in points]
    assert group_title(5.0, 300, "contract-aware") == "c = 5, budget 300 steps, contract-aware"
    assert group_title(5.0, 300) == "c = 5, budget 300 steps"
    # a result without a grid point is read from its config, which names every option: the base
    old = {"config": {"reward_scale": 1.0, "clip_strength": 5, "steps": 200, "seed": 0, "lr": 1e-4,
                      "contract_aware": True}, "summary": {"val_strict_parse_rate": 0.9}}
    assert run_from_result("old", old).group == (5.0, 200, "")
