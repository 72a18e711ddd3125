"""The sweep report: one self-contained Markdown page (report.md) with PNG figures beside it.

Inputs (each optional except the sweep folder; a missing or unreadable piece is named on the page):

- SWEEP/results/*.json   one file per run, as `listopd sweep` writes them: "grid_point" / "config" (λ =
                         reward_scale, c = clip_strength, budget = steps, seed), "summary" (final validation:
                         val_strict_parse_rate, val_ndcg@1_parsed, val_ndcg@1_strict), started_at / ended_at,
                         train_seconds, code_version.
- SWEEP/sweep.json       the plan (its "runs"), else prereg.json's "grid": planned runs without a result are
                         named, and leave the onsets above them undetermined.
- calibration.json       `listopd calibrate --out` (p, b, c, λ*, its bootstrap intervals, the role table);
                         --calibration, else SWEEP/calibration.json, else the file prereg.json locked, else the
                         file the runs' configs name. Without one, p and b come from prereg.json, else from the
                         runs' cliff_p / cliff_b (no interval).
- SWEEP/prereg.json      the locked predictions (`listopd prereg lock`): the onset rule, the tested form of λ*
                         (λ*(p,b,c) or the base-neutral λ*(p,c)), its value per c, each test's prediction.
- SWEEP/prereg_result.json   the tests' verdicts (`listopd prereg check`).
- a size-axis file       a JSON list of {name, parameters, strict_parse_rate, ndcg@1_parsed, ndcg@1_strict}
                         (or {name, parameters, summary: PATH to a run's summary.json}).
- baseline files         `listopd constrained --out` results (constrained-decoding baseline): --baseline FILE
                         (repeatable), else SWEEP/baselines/*.json; shown beside the sweep's ListOPD student.

Runs are grouped by (clip strength c, step budget, variant); every figure has one panel per group (rows:
budget and variant, columns: c), and the findings, onsets and per-λ tables come one per group. The variant
names the off-base axes a run's grid point carries (`prereg_spec.OFF_BASE_AXES`; `variant_of`): "" for the
base, "lr 0.0001" for another learning rate (run names ending _lr0.0001), "contract-aware" for contract-aware
extrapolation (_aware), "plain" for plain ListOPD in a sweep whose base is contract-aware (_plain). Such runs
are arms of their own (pre-registered tests 4 and 7 compare them with the base), so the two arms of a test
stand side by side and each one's onsets and cliff interval are computed from its own seeds only; planned runs
(sweep.json's entries carry the same off-base keys) are matched to their arm. λ* is predicted per c and drawn
in every arm's panels.

Onset (docs/method.md#the-onset-rule-for-sweeps): `listopd.core.onset.find_onset`, the one definition shared
with the sweep and the pre-registered tests, with the threshold and drop locked in prereg.json (else the
default below, said on the page). The cliff interval of a group is the union of the seeds' brackets
[min λ_(i−1), max λ_i] over the seeds with an onset (`listopd.core.onset.union_bracket`), as in pre-registered
test 1; "λ* falls in the onset interval" means it lies in it.
"""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from listopd.core import theory
from listopd.core.onset import find_onset, onset_definition, union_bracket
from listopd.experiment.mechanism import ID_SLOTS_FIGURE, MECHANISM_FIGURE, group_title, section_mechanism
from listopd.experiment.prereg_spec import OFF_BASE_AXES

DEFAULT_ONSET_THRESHOLD = 0.5
DEFAULT_ONSET_DROP = None
FIGURE_DPI = 110

PARSE_KEY = "val_strict_parse_rate"
NDCG_PARSED_KEY = "val_ndcg@1_parsed"
NDCG_STRICT_KEY = "val_ndcg@1_strict"


# ---------------------------------------------------------------------------------------------------------
# reading the inputs


@dataclass
class RunResult:
    name: str
    lam: float
    c: float
    budget: int
    seed: int
    parse: float | None
    ndcg_parsed: float | None
    ndcg_strict: float | None
    config: dict
    summary: dict
    started_at: str | None = None
    ended_at: str | None = None
    code_version: str | None = None
    train_seconds: float | None = None
    variant: str = ""  # the off-base axes of its grid point, e.g. "lr 0.0001" or "contract-aware"; "" for the base

    @property
    def group(self) -> tuple[float, int, str]:
        return (self.c, self.budget, self.variant)


@dataclass
class SweepResults:
    folder: Path
    runs: list[RunResult] = field(default_factory=list)
    plan: list[dict] = field(default_factory=list)  # the planned grid points (OUT/sweep.json), when present
    problems: list[str] = field(default_factory=list)

    def groups(self) -> dict[tuple[float, int, str], list[RunResult]]:
        out = defaultdict(list)
        for run in self.runs:
            out[run.group].append(run)
        return dict(sorted(out.items(), key=lambda kv: group_order(kv[0])))

    def planned(self, key: tuple[float, int, str]) -> list[dict]:
        return [pt for pt in self.plan if plan_key(pt) == key]


# How each off-base axis reads in a group's title. A grid point carries an off-base key only when its value
# differs from the sweep's base (listopd.experiment.sweep), so any key present makes the run an arm of its own,
# as `prereg_spec.on_axes` counts it: contract_aware false appears only in a sweep whose base objective is the
# contract-aware one (its runs are named _plain), and merging it into the base would mix the two objectives.
VARIANT_LABELS = {"lr": lambda v: f"lr {float(v):g}",
                  "contract_aware": lambda v: "contract-aware" if v else "plain"}
assert set(VARIANT_LABELS) == set(OFF_BASE_AXES)


def variant_of(point: dict) -> str:
    """The label of a grid point's off-base axes ("" on the base): "lr 0.0001", "contract-aware", "plain" (see
    VARIANT_LABELS), or several joined by ", " in OFF_BASE_AXES order. Two points get the same label exactly
    when they lie on the same off-base axes."""
    return ", ".join(VARIANT_LABELS[k](point[k]) for k in OFF_BASE_AXES if point.get(k) is not None)


def group_order(key: tuple[float, int, str]) -> tuple[int, str, float]:
    """Groups in the order the report lists them: by budget, then variant (the base first), then c."""
    c, budget, variant = key
    return budget, variant, c


def plan_key(point: dict) -> tuple[float, int, str]:
    return float(point["clip_strength"]), int(point["steps"]), variant_of(point)


def _read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _final_metric(result: dict, key: str) -> float | None:
    """The final validation value from the run's summary (what `listopd prereg check` reads too)."""
    return _number((result.get("summary") or {}).get(key))


def _code_version(value) -> str | None:
    """listopd.experiment.sweep.code_version() writes {listopd, git_commit, git_dirty}; older files a string."""
    if isinstance(value, dict):
        commit = value.get("git_commit")
        text = f"listopd {value.get('listopd')}" + (f", git {commit[:12]}" if commit else "")
        return text + (" (dirty tree)" if value.get("git_dirty") else "")
    return None if value is None else str(value)


def run_from_result(name: str, result: dict) -> RunResult:
    """One result file → RunResult (λ, c, steps, seed from "grid_point", else "config"; the variant from
    "grid_point" only, since a config names every option whether off the base or not); KeyError / TypeError /
    ValueError when it has none."""
    cfg = result.get("config") or {}
    point = result.get("grid_point") or cfg
    return RunResult(name=result.get("name") or name, lam=round(float(point["reward_scale"]), 9),
               variant=variant_of(result.get("grid_point") or {}),
               c=float(point["clip_strength"]), budget=int(point["steps"]), seed=int(point["seed"]),
               parse=_final_metric(result, PARSE_KEY), ndcg_parsed=_final_metric(result, NDCG_PARSED_KEY),
               ndcg_strict=_final_metric(result, NDCG_STRICT_KEY), config=cfg, summary=result.get("summary") or {},
               started_at=result.get("started_at"), ended_at=result.get("ended_at") or result.get("finished_at"),
               code_version=_code_version(result.get("code_version")),
               train_seconds=_number(result.get("train_seconds")))


def load_plan(folder: Path) -> tuple[list[dict], str | None]:
    """The planned grid points: OUT/sweep.json's "runs" (written by `listopd sweep`), else prereg.json's
    "grid"; [] when neither is there."""
    keys = ("name", "reward_scale", "clip_strength", "steps", "seed")
    for name, field_name in (("sweep.json", "runs"), ("prereg.json", "grid")):
        data, problem = read_optional_json(folder / name)
        if data is None:
            if problem and not problem.endswith("not found"):
                return [], problem
            continue
        points = data.get(field_name) if isinstance(data, dict) else None
        if points is None:
            continue
        if isinstance(points, list) and all(isinstance(pt, dict) and all(k in pt for k in keys) for pt in points):
            return points, None
        return [], f"{folder / name} has no usable run list; the grid is taken from the results"
    return [], None


def load_results(folder: str | Path) -> SweepResults:
    """Every SWEEP/results/*.json and the plan; unreadable files, duplicates and planned runs without a
    result go to `problems`."""
    folder = Path(folder)
    sweep = SweepResults(folder)
    sweep.plan, problem = load_plan(folder)
    if problem:
        sweep.problems.append(problem)
    results = folder / "results"
    if not results.is_dir():
        sweep.problems.append(f"no results folder: {results}")
        return sweep
    seen: dict[tuple, RunResult] = {}
    for path in sorted(results.glob("*.json")):
        try:
            run = run_from_result(path.stem, _read_json(path))
        except (OSError, ValueError) as e:
            sweep.problems.append(f"{path.name}: unreadable ({type(e).__name__}: {e})")
            continue
        except (KeyError, TypeError) as e:
            sweep.problems.append(f"{path.name}: no usable config ({type(e).__name__}: {e})")
            continue
        key = (run.lam, *run.group, run.seed)
        if key in seen:
            sweep.problems.append(f"{path.name}: same λ, c, budget, variant and seed as {seen[key].name}; "
                                  "kept the later one")
            if (run.ended_at or "") < (seen[key].ended_at or ""):
                continue
        if run.parse is None:
            sweep.problems.append(f"{path.name}: no final strict parse rate (run unfinished, or no validation set)")
        seen[key] = run
    sweep.runs = list(seen.values())
    return sweep


def missing_cells(sweep: SweepResults) -> list[str]:
    """One line per (c, budget, variant) naming the (λ, seed) cells without a result: the planned grid points
    when the plan is known, else the holes in each group's λ × seed product."""
    have = {(r.lam, *r.group, r.seed) for r in sweep.runs}
    cells = defaultdict(list)
    if sweep.plan:
        for pt in sweep.plan:
            key = plan_key(pt)
            if (round(float(pt["reward_scale"]), 9), *key, int(pt["seed"])) not in have:
                cells[key].append((float(pt["reward_scale"]), int(pt["seed"])))
    else:
        for key, runs in sweep.groups().items():
            lams, seeds = sorted({r.lam for r in runs}), sorted({r.seed for r in runs})
            cells[key] = [(lam, s) for lam in lams for s in seeds if (lam, *key, s) not in have]
    lines = []
    for key, gaps in sorted(cells.items(), key=lambda kv: group_order(kv[0])):
        if gaps:
            shown = ", ".join(f"λ {fmt_lam(lam)} seed {s}" for lam, s in sorted(gaps)[:12])
            more = f" and {len(gaps) - 12} more" if len(gaps) > 12 else ""
            lines.append(f"{group_title(*key)}: {len(gaps)} (λ, seed) cells have no result: {shown}{more}")
    return lines


def find_calibration(sweep: SweepResults, explicit: str | None, prereg) -> tuple[dict | None, Path | None, str | None]:
    """(calibration dict, its path, a problem message). Looked for: --calibration, SWEEP/calibration.json,
    the file prereg.json locked, the files the runs' configs name."""
    locked = prereg.get("calibration") if isinstance(prereg, dict) else None
    locked_path = [Path(locked["path"])] if isinstance(locked, dict) and isinstance(locked.get("path"), str) else []
    candidates = [Path(explicit)] if explicit else [sweep.folder / "calibration.json"] + locked_path + sorted(
        {Path(r.config["calibration"]) for r in sweep.runs if r.config.get("calibration")})
    for path in candidates:
        if not path.is_file():
            continue
        try:
            cal = _read_json(path)
        except (OSError, ValueError) as e:
            return None, path, f"calibration file {path} is unreadable ({e})"
        if not isinstance(cal, dict):
            return None, path, f"calibration file {path} is not a JSON object"
        return cal, path, None
    if explicit:
        return None, None, f"calibration file {explicit} not found"
    return None, None, "no calibration file (pass --calibration, or put calibration.json in the sweep folder)"


def read_optional_json(path: Path) -> tuple[object | None, str | None]:
    if not path.is_file():
        return None, f"{path.name} not found"
    try:
        return _read_json(path), None
    except (OSError, ValueError) as e:
        return None, f"{path} is unreadable ({e})"


# ---------------------------------------------------------------------------------------------------------
# the prediction λ* per clip strength


FORM_LABELS = {"pb": "λ*(p,b,c)", "base_neutral": "λ*(p,c)"}


@dataclass
class Prediction:
    """Both closed forms at one c; `form` ("pb" or "base_neutral", locked in prereg.json) picks the one the
    report tests, the other is drawn beside it."""
    c: float
    pb: float | None
    base_neutral: float | None
    source: str
    pb_ci: tuple[float, float] | None = None
    base_neutral_ci: tuple[float, float] | None = None
    form: str = "pb"

    @property
    def lambda_star(self) -> float | None:
        return self.pb if self.form == "pb" else self.base_neutral

    @property
    def ci(self) -> tuple[float, float] | None:
        return self.pb_ci if self.form == "pb" else self.base_neutral_ci

    @property
    def label(self) -> str:
        return FORM_LABELS[self.form]

    @property
    def other(self) -> tuple[float | None, str]:
        return (self.base_neutral, FORM_LABELS["base_neutral"]) if self.form == "pb" else (self.pb, FORM_LABELS["pb"])


def _stored_lambda_star(x) -> float | None:
    """A λ* read back from calibration.json or prereg.json: they write λ* = +∞ as null, so null reads as ∞;
    anything else that is not a finite number reads as None."""
    return math.inf if x is None else _number(x)


def _ci(value) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if isinstance(value, (list, tuple)) and len(value) == 2 else None


def _has_pb(d) -> bool:
    return isinstance(d, dict) and _number(d.get("p")) is not None and _number(d.get("b")) is not None


def _source_pb(calibration, prereg, runs: list[RunResult]) -> tuple[dict | None, str]:
    """(a mapping with p, b and maybe c and intervals, where it came from)."""
    if _has_pb(calibration):
        return calibration, f"calibration (binding role {calibration.get('binding_role')})"
    locked = prereg.get("calibration") if isinstance(prereg, dict) else None
    if _has_pb(locked):
        return locked, "the calibration locked in prereg.json"
    for run in runs:
        pb = {"p": run.config.get("cliff_p"), "b": run.config.get("cliff_b")}
        if _has_pb(pb):
            return pb, "the runs' cliff_p / cliff_b"
    return None, "none (no calibration, no cliff_p / cliff_b in the runs)"


def _locked_lambda_star(prereg, c: float) -> tuple[float, float] | None:
    """(λ*(p,b,c), λ*(p,c)) locked in prereg.json's "lambda_star" rows for this c; null there is +∞."""
    rows = prereg.get("lambda_star") if isinstance(prereg, dict) else None
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and _number(row.get("c")) is not None and math.isclose(float(row["c"]), c):
            return (_stored_lambda_star(row.get("lambda_star_pb")),
                    _stored_lambda_star(row.get("lambda_star_base_neutral")))
    return None


def predict(c: float, calibration: dict | None, prereg, runs: list[RunResult]) -> Prediction:
    """λ*(p, b, c) and λ*(p, c) from the calibrated p, b (else the ones locked in prereg.json, else the runs'
    cliff_p / cliff_b); the calibration's bootstrap intervals apply only at the c it was measured at."""
    form = prereg.get("lambda_star_form") if isinstance(prereg, dict) else None
    form = form if form in FORM_LABELS else "pb"
    cal, source = _source_pb(calibration, prereg, runs)
    locked = _locked_lambda_star(prereg, c)
    if locked is not None:
        pred = Prediction(c, *locked, "locked in prereg.json", form=form)
        if cal is None:
            return pred
    elif cal is None:
        return Prediction(c, None, None, source, form=form)
    else:
        p, b = float(cal["p"]), float(cal["b"])
        pred = Prediction(c, theory.lambda_star_or_none(p, b, c),
                          theory.lambda_star_or_none(p, b, c, form="base_neutral"), source, form=form)
    if _number(cal.get("c")) is not None and math.isclose(float(cal["c"]), c):
        pred.pb_ci, pred.base_neutral_ci = _ci(cal.get("lambda_star_ci")), _ci(cal.get("lambda_star_base_neutral_ci"))
    elif _number(cal.get("c")) is not None:
        pred.source += f"; measured at c = {float(cal['c']):g}, so no interval at this c"
    return pred


# ---------------------------------------------------------------------------------------------------------
# onsets


@dataclass
class OnsetRule:
    threshold: float
    drop: float | None
    source: str

    def describe(self) -> str:
        return onset_definition(self.threshold, self.drop)

    def short(self) -> str:
        drop = f" or a drop > {self.drop:g}" if self.drop is not None else ""
        return f"strict parse rate < {self.threshold:g}{drop}"


def onset_rule(prereg, prereg_result, given: tuple[float, float | None] | None = None) -> OnsetRule:
    """The locked onset rule: prereg.json's "onset" {threshold, drop}, else prereg_result.json's; without a
    locked one, the rule `given` on the command line, else the report's default (said on the page)."""
    for data, name in ((prereg, "prereg.json"), (prereg_result, "prereg_result.json")):
        onset = data.get("onset") if isinstance(data, dict) else None
        if isinstance(onset, dict) and _number(onset.get("threshold")) is not None:
            return OnsetRule(float(onset["threshold"]), _number(onset.get("drop")), name)
    if given is not None:
        return OnsetRule(given[0], given[1], "given on the command line (no locked rule in prereg.json)")
    return OnsetRule(DEFAULT_ONSET_THRESHOLD, DEFAULT_ONSET_DROP,
                     "the report's default: no locked rule in prereg.json")


@dataclass
class GroupOnsets:
    per_seed: dict  # seed → listopd.core.onset.Onset (lam None: no collapse, or undetermined when not complete)
    grid: list[float]
    missing_at: dict = field(default_factory=dict)  # seed → the first grid λ without a result
    last_at: dict = field(default_factory=dict)  # seed → the largest λ of that seed's grid (seeds may differ)

    @property
    def found(self) -> list[float]:
        return [o.lam for o in self.per_seed.values() if o.lam is not None]

    def interval(self) -> tuple[float | None, float] | None:
        """The union of the brackets of the seeds with an onset, [min λ_(i−1), max λ_i] (as in pre-registered
        test 1); lo None when some onset is at the lowest grid point."""
        return union_bracket(self.per_seed.values())

    def contains(self, lam: float | None) -> bool | None:
        iv = self.interval()
        if iv is None or lam is None or not math.isfinite(lam):
            return None
        lo, hi = iv
        return (lo is None or lam >= lo) and lam <= hi


def group_onsets(runs: list[RunResult], planned: list[dict], rule: OnsetRule) -> GroupOnsets:
    """Per seed, listopd.core.onset.find_onset over the group's grid (the planned points and the results; without
    a plan, every λ of the group); a grid point without a result is a missing rate, which leaves the onset
    undetermined from there up."""
    grid = sorted({r.lam for r in runs} | {round(float(pt["reward_scale"]), 9) for pt in planned})
    seeds = sorted({r.seed for r in runs} | {int(pt["seed"]) for pt in planned})
    rate = {(r.lam, r.seed): r.parse for r in runs}
    if planned:
        cells = set(rate) | {(round(float(pt["reward_scale"]), 9), int(pt["seed"])) for pt in planned}
    else:  # no plan: every seed is expected at every λ of the group
        cells = {(lam, seed) for lam in grid for seed in seeds}
    per_seed, missing_at, last_at = {}, {}, {}
    for seed in seeds:
        lams = [lam for lam in grid if (lam, seed) in cells]
        rates = [rate.get((lam, seed)) for lam in lams]
        per_seed[seed] = find_onset(lams, rates, rule.threshold, rule.drop)
        missing_at[seed] = next((lam for lam, r in zip(lams, rates) if r is None), None)
        last_at[seed] = lams[-1] if lams else None
    return GroupOnsets(per_seed, grid, missing_at, last_at)


def onset_text(o, missing_at: float | None = None, last_at: float | None = None) -> str:
    if o.lam is not None:
        return fmt_lam(o.lam)
    if o.complete:
        return f"none up to λ = {fmt_lam(last_at)}" if last_at is not None else "none on the grid"
    return "undetermined" + (f" (no result at λ = {fmt_lam(missing_at)})" if missing_at is not None else "")


# ---------------------------------------------------------------------------------------------------------
# formatting


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def ci_text(ci: tuple[float, float]) -> str:
    """[lo, hi] with 3 decimals, or 4 when 3 would print a narrow interval as a single number."""
    digits = 3 if ci[1] - ci[0] >= 0.005 else 4
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def fmt_lam(x) -> str:
    return "—" if x is None else ("∞" if math.isinf(x) else f"{x:g}")


def fmt_value(x) -> str:
    """A verdict's predicted / observed / window: numbers, lists of numbers, dicts, text."""
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in x) + "]"
    if isinstance(x, dict):
        return ", ".join(f"{k} {fmt_value(v)}" for k, v in x.items())
    return "—" if x is None else str(x).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------------------
# figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel_grid(groups: dict, title: str):
    """One panel per (c, budget, variant): rows = (budget, variant), columns = clip strengths."""
    plt = _pyplot()
    cs = sorted({c for c, _, _ in groups})
    rows = sorted({(b, v) for _, b, v in groups})
    width = max(6.5, 5.2 * len(cs))
    fig, axes = plt.subplots(len(rows), len(cs), figsize=(width, 5.0 * len(rows)), squeeze=False,
                             layout="constrained")
    panels = {}
    for i, (budget, variant) in enumerate(rows):
        for j, c in enumerate(cs):
            ax = axes[i][j]
            if (c, budget, variant) in groups:
                panels[(c, budget, variant)] = ax
            else:
                ax.axis("off")
                ax.text(0.5, 0.5, f"no runs at {group_title(c, budget, variant)}", ha="center", va="center",
                        transform=ax.transAxes, color="gray")
    fig.suptitle(textwrap.fill(title, width=int(width * 10)), fontsize=12)
    return fig, panels


def _legend_below(ax, handles=None, labels=None) -> None:
    """The legend under the panel, so it never hides a line."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)


def _seed_colors(runs: list[RunResult]) -> dict[int, str]:
    return {s: f"C{i % 10}" for i, s in enumerate(sorted({r.seed for r in runs}))}


def _xlim(ax, grid: list[float]) -> tuple[float, float]:
    """The λ axis for `grid`: linear, or logarithmic when the grid spans more than a factor of 4 (a fine grid
    near λ* beside a coarse one out to λ = 10 stays readable)."""
    if grid[0] > 0 and grid[-1] / grid[0] > 4:
        from matplotlib.ticker import FuncFormatter

        lo, hi = grid[0] / 1.06, grid[-1] * 1.06
        ax.set_xscale("log")
        ax.set_xticks(grid, minor=False)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
        ax.tick_params(axis="x", labelsize=7, labelrotation=90)
    else:
        span = (grid[-1] - grid[0]) or 0.1
        lo, hi = grid[0] - 0.04 * span, grid[-1] + 0.04 * span
    ax.set_xlim(lo, hi)
    return lo, hi


def _draw_prediction(ax, pred: Prediction, xlim: tuple[float, float]) -> None:
    """The tested prediction as a dashed vertical line with its interval as a band; the other closed form
    dotted."""
    lo, hi = xlim
    lam = pred.lambda_star
    if lam is not None and math.isfinite(lam):
        where = "" if lo <= lam <= hi else " (off the plotted range)"
        ax.axvline(lam, color="crimson", ls="--", lw=1.5, label=f"predicted {pred.label} = {lam:.3f}{where}")
    if pred.ci is not None:
        ax.axvspan(pred.ci[0], pred.ci[1], color="crimson", alpha=0.12, label=f"95% bootstrap interval {ci_text(pred.ci)}")
    other, label = pred.other
    if other is not None and math.isfinite(other) and (lam is None or abs(other - lam) > 1e-3):
        ax.axvline(other, color="purple", ls=":", lw=1.2, label=f"{label} = {other:.3f} (not the tested form)")
    ax.set_xlim(lo, hi)


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=FIGURE_DPI)
    _pyplot().close(fig)


def _label_rate_panel(ax, key: tuple[float, int, str], ylabel: str) -> None:
    """Axes of a panel that plots a rate in [0, 1] against λ for one (c, budget, variant) group."""
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("λ (reward scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(group_title(*key), fontsize=10)
    ax.grid(alpha=0.3)


def plot_parse_rate(groups, preds, rule: OnsetRule, path: Path) -> None:
    fig, panels = _panel_grid(groups, "Strict parse rate (validation) against λ, one line per seed")
    for key, ax in panels.items():
        runs = groups[key]
        colors = _seed_colors(runs)
        grid = sorted({r.lam for r in runs})
        for seed, color in colors.items():
            pts = sorted((r.lam, r.parse) for r in runs if r.seed == seed and r.parse is not None)
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=color, ms=4, lw=1.3, label=f"seed {seed}")
        ax.axhline(rule.threshold, color="gray", ls="-.", lw=1, label=f"onset threshold {rule.threshold:g}")
        _draw_prediction(ax, preds[key[0]], _xlim(ax, grid))
        _label_rate_panel(ax, key, "strict parse rate")
        _legend_below(ax)
    _save(fig, path)


def plot_ndcg(groups, preds, path: Path) -> None:
    from matplotlib.lines import Line2D

    fig, panels = _panel_grid(groups, "NDCG@1 (validation) against λ: on parsed outputs (solid) and strict (dashed)")
    for key, ax in panels.items():
        runs = groups[key]
        colors = _seed_colors(runs)
        grid = sorted({r.lam for r in runs})
        for seed, color in colors.items():
            mine = sorted((r for r in runs if r.seed == seed), key=lambda r: r.lam)
            parsed = [(r.lam, r.ndcg_parsed) for r in mine if r.ndcg_parsed is not None]
            strict = [(r.lam, r.ndcg_strict) for r in mine if r.ndcg_strict is not None]
            ax.plot([x for x, _ in parsed], [y for _, y in parsed], "o-", color=color, ms=4, lw=1.3)
            ax.plot([x for x, _ in strict], [y for _, y in strict], "x--", color=color, ms=4, lw=1, alpha=0.8)
        if not any(r.ndcg_parsed is not None or r.ndcg_strict is not None for r in runs):
            ax.text(0.5, 0.5, "no NDCG@1 in these results", ha="center", va="center", transform=ax.transAxes,
                    color="gray")
        _draw_prediction(ax, preds[key[0]], _xlim(ax, grid))
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color=col, marker="o", lw=1.3) for col in colors.values()]
        labels += [f"seed {s}" for s in colors]
        handles += [Line2D([], [], color="k", marker="o", lw=1.3), Line2D([], [], color="k", marker="x", ls="--")]
        labels += ["NDCG@1, parsed outputs only", "NDCG@1 strict (invalid = 0)"]
        _label_rate_panel(ax, key, "NDCG@1")
        _legend_below(ax, handles, labels)
    _save(fig, path)


def plot_onsets(groups, onsets, preds, rule: OnsetRule, path: Path) -> None:
    fig, panels = _panel_grid(groups, f"Onset per seed (first grid λ with {rule.short()}) beside the predicted λ*")
    for key, ax in panels.items():
        info = onsets[key]
        colors = _seed_colors(groups[key])
        xlim = _xlim(ax, info.grid)
        iv = info.interval()
        if iv is not None:
            lo = iv[0] if iv[0] is not None else xlim[0]
            hi = iv[1] if iv[1] is not None else xlim[1]
            ax.axvspan(lo, hi, color="gray", alpha=0.15, label="cliff interval over seeds")
        seeds = list(info.per_seed)
        for y, seed in enumerate(seeds):
            o = info.per_seed[seed]
            found, before = o.lam, o.lower
            color = colors.get(seed, "gray")
            if found is None:
                if o.complete:
                    x = info.last_at.get(seed) or info.grid[-1]
                    text, marker = f"no onset ≤ {x:g}", ">"
                else:
                    x = info.missing_at.get(seed) or info.grid[-1]
                    text, marker = f"undetermined: no result at λ = {x:g}", "x"
                ax.plot([x], [y], marker, color=color, ms=8)
                right_half = x > (info.grid[0] + info.grid[-1]) / 2
                ax.annotate(text, (x, y), xytext=(4 if right_half else -4, 8), textcoords="offset points",
                            ha="right" if right_half else "left", fontsize=7, color=color)
                continue
            start = before if before is not None else xlim[0]
            ax.plot([start, found], [y, y], "-", color=color, lw=2, marker="|", ms=12)
            ax.plot([found], [y], "o", color=color, ms=7)
        _draw_prediction(ax, preds[key[0]], xlim)
        ax.set_yticks(range(len(seeds)), [f"seed {s}" for s in seeds])
        ax.set_ylim(-0.7, len(seeds) - 0.3)
        ax.set_xlabel("λ (reward scale); dot = onset, bracket = grid step it lies in")
        ax.set_title(group_title(*key), fontsize=10)
        ax.grid(alpha=0.3, axis="x")
        _legend_below(ax)
    _save(fig, path)


# ---------------------------------------------------------------------------------------------------------
# the size axis


def load_size_axis(path: Path) -> tuple[list[dict], list[str]]:
    """Rows {name, parameters, strict_parse_rate, ndcg@1_parsed, ndcg@1_strict}; a row may instead name a
    run's summary.json (relative to the size-axis file) for the three numbers."""
    data, problem = read_optional_json(path)
    if problem:
        return [], [f"size axis: {problem}"]
    if not isinstance(data, list):
        return [], [f"size axis: {path} is not a JSON list"]
    rows, problems = [], []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "name" not in entry:
            problems.append(f"size axis: entry {i} has no name")
            continue
        row = dict(entry)
        if row.get("summary"):
            summary, err = read_optional_json((path.parent / row["summary"]))
            if err:
                problems.append(f"size axis: {row['name']}: {err}")
            elif isinstance(summary, dict):
                row.setdefault("strict_parse_rate", summary.get(PARSE_KEY))
                row.setdefault("ndcg@1_parsed", summary.get(NDCG_PARSED_KEY))
                row.setdefault("ndcg@1_strict", summary.get(NDCG_STRICT_KEY))
        rows.append(row)
    return rows, problems


def student_from_sweep(groups, preds) -> dict | None:
    """The ListOPD student at the chosen λ: the grid λ below λ* with the best mean strict parse rate
    (the base objective and learning rate where it has runs, then the largest budget, the clip strength with the
    most runs)."""
    if not groups:
        return None
    key = max(groups, key=lambda k: (k[2] == "", k[1], len(groups[k])))
    runs = groups[key]
    lam_star = preds[key[0]].lambda_star
    by_lam = defaultdict(list)
    for r in runs:
        if lam_star is None or r.lam < lam_star:
            by_lam[r.lam].append(r)
    scored = {lam: mean(r.parse for r in rs) for lam, rs in by_lam.items()}
    scored = {lam: v for lam, v in scored.items() if v is not None}
    if not scored:
        return None
    lam = max(scored, key=scored.get)
    rs = by_lam[lam]
    return {"name": f"ListOPD student, λ = {lam:g} ({group_title(*key)}, mean of {len(rs)} seeds, from the sweep)",
            "parameters": None, "strict_parse_rate": scored[lam],
            "ndcg@1_parsed": mean(r.ndcg_parsed for r in rs), "ndcg@1_strict": mean(r.ndcg_strict for r in rs),
            "decoding": _validation_decoding(rs)}


def _validation_decoding(runs) -> str:
    """How the runs' validation decoded (OPDConfig.eval_temperature: 0 greedy, else one sample at T)."""
    temps = {float((r.config or {}).get("eval_temperature") or 0.0) for r in runs}
    if len(temps) != 1:
        return "mixed"
    (t,) = temps
    return "greedy" if t == 0 else f"T = {t:g}"


def fmt_parameters(n) -> str:
    if isinstance(n, (int, float)) and not isinstance(n, bool):
        for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if n >= size:
                return f"{n / size:.3g}{unit}"
        return str(n)
    return fmt(n)


# ---------------------------------------------------------------------------------------------------------
# the page


@dataclass
class Inputs:
    sweep: SweepResults
    calibration: dict | None
    calibration_path: Path | None
    prereg: object | None
    prereg_result: object | None
    size_rows: list[dict]
    size_source: str | None
    problems: list[str]
    baselines: list[tuple[Path, dict]] = field(default_factory=list)


def gather(sweep_dir: Path, calibration: str | None, size_axis: str | None,
           baselines: list[str] | None = None) -> Inputs:
    sweep = load_results(sweep_dir)
    problems = list(sweep.problems) + missing_cells(sweep)
    prereg, err = read_optional_json(sweep_dir / "prereg.json")
    if err:
        problems.append(f"locked predictions: {err}")
    cal, cal_path, err = find_calibration(sweep, calibration, prereg)
    if err:
        problems.append(err)
    verdicts, err = read_optional_json(sweep_dir / "prereg_result.json")
    if err:
        problems.append(f"test verdicts: {err} (tests not evaluated)")
    size_path = Path(size_axis) if size_axis else sweep_dir / "size_axis.json"
    size_rows, size_source = [], None
    if size_axis or size_path.is_file():
        size_rows, errs = load_size_axis(size_path)
        problems += errs
        size_source = str(size_path)
    else:
        problems.append("no size-axis file (pass --size-axis): the size table has the sweep's student only")
    paths = [Path(b) for b in baselines] if baselines else sorted((sweep_dir / "baselines").glob("*.json"))
    found, errs = load_baselines(paths)
    problems += errs
    return Inputs(sweep, cal, cal_path, prereg, verdicts, size_rows, size_source, problems, found)


def section_inputs(inp: Inputs, rule: OnsetRule) -> list[str]:
    runs = inp.sweep.runs
    lines = ["## Inputs", ""]
    lines.append(f"- sweep: `{inp.sweep.folder}` — {len(runs)} runs read")
    if runs:
        lines.append(f"- λ grid: {', '.join(fmt_lam(x) for x in sorted({r.lam for r in runs}))}")
        lines.append(f"- seeds: {', '.join(str(s) for s in sorted({r.seed for r in runs}))}; "
                     f"clip strengths c: {', '.join(f'{c:g}' for c in sorted({r.c for r in runs}))}; "
                     f"budgets: {', '.join(f'{b} steps' for b in sorted({r.budget for r in runs}))}")
        starts = sorted(r.started_at for r in runs if r.started_at)
        ends = sorted(r.ended_at for r in runs if r.ended_at)
        if starts and ends:
            lines.append(f"- runs started {starts[0]}, last finished {ends[-1]}")
        seconds = [r.train_seconds for r in runs if r.train_seconds is not None]
        if seconds:
            lines.append(f"- training time: {sum(seconds) / 3600:.2f} h over {len(seconds)} runs")
        if inp.sweep.plan:
            lines.append(f"- planned runs (sweep.json, else prereg.json's grid): {len(inp.sweep.plan)}")
        versions = sorted({str(r.code_version) for r in runs if r.code_version})
        if versions:
            note = "" if len(versions) == 1 else " (**more than one code version in one sweep**)"
            lines.append(f"- code version: {', '.join(f'`{v}`' for v in versions)}{note}")
    lines.append(f"- calibration: `{inp.calibration_path}`" if inp.calibration else "- calibration: missing")
    lines.append(f"- locked predictions (prereg.json): {_lock_note(inp.prereg, runs)}")
    lines.append(f"- test verdicts (prereg_result.json): {'found' if inp.prereg_result is not None else 'missing'}")
    lines.append(f"- size axis: `{inp.size_source}`" if inp.size_source else "- size axis: missing")
    if inp.baselines:
        lines.append("- constrained-decoding baselines: " + ", ".join(f"`{p}`" for p, _ in inp.baselines))
    lines.append(f"- onset rule: {rule.describe()} (from {rule.source})")
    if inp.problems:
        lines += ["", "Missing or incomplete:", ""] + [f"- {p}" for p in inp.problems]
    return lines + [""]


def _lock_note(prereg, runs: list[RunResult]) -> str:
    """'found', and whether it was locked before the first run started when it carries a time."""
    if prereg is None:
        return "missing"
    locked = next((prereg[k] for k in ("locked_at", "created_at", "written_at")
                   if isinstance(prereg, dict) and isinstance(prereg.get(k), str)), None)
    starts = sorted(r.started_at for r in runs if r.started_at)
    if locked is None or not starts:
        return "found"
    try:
        before = _utc(locked) <= _utc(starts[0])
    except ValueError:
        return f"found, locked at {locked}"
    return f"found, locked at {locked}, " + ("before the first run started" if before
                                            else "**after the first run started**")


def _utc(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def findings(groups, preds, onsets, rule: OnsetRule, verdicts) -> list[str]:
    """Plain statements from the numbers: where the cliff is, whether λ* lies in the onset interval."""
    out = []
    for key, runs in groups.items():
        out.append(_group_finding(key, runs, preds[key[0]], onsets[key], rule))
    if not groups:
        out.append("There are no runs to describe.")
    out.append(_verdict_finding(verdicts))
    return out


def _mean_at(runs: list[RunResult], lam: float, attr: str) -> float | None:
    return mean(getattr(r, attr) for r in runs if r.lam == lam)


def _prediction_phrase(pred: Prediction) -> str:
    if pred.lambda_star is None:
        return "no prediction is available"
    text = f"the predicted {pred.label} is {fmt_lam(round(pred.lambda_star, 4))}"
    if pred.ci is not None:
        text += f" (95% interval {ci_text(pred.ci)})"
    return text


def interval_text(iv) -> str:
    lo, hi = iv
    return f"[{fmt_lam(lo) if lo is not None else '−∞'}, {fmt_lam(hi)}]"


def _group_finding(key, runs, pred: Prediction, info: GroupOnsets, rule: OnsetRule) -> str:
    title, grid, n = group_title(*key), info.grid, len(info.per_seed)
    star = _prediction_phrase(pred)
    undetermined = [s for s, o in info.per_seed.items() if not o.complete]
    note = (f" Undetermined onsets: {len(undetermined)} of {n} seeds (a missing result below any collapse)."
            if undetermined else "")
    if not info.found:
        text = (f"**{title}**: no seed's strict parse rate met the onset rule ({rule.short()}) on the grid "
                f"λ = {fmt_lam(grid[0])}…{fmt_lam(grid[-1])} ({n} seeds); {star}.{note}")
        if pred.lambda_star is not None and grid[0] <= pred.lambda_star <= grid[-1] and not undetermined:
            text += " The prediction lies inside the grid, but no cliff was observed at this budget."
        return text + _ndcg_sentence(runs, grid[-1])
    earliest = min(info.found)
    per_seed = ", ".join(f"seed {s}: {onset_text(o, info.missing_at.get(s), info.last_at.get(s))}" for s, o in info.per_seed.items())
    text = (f"**{title}**: the strict parse rate first meets the onset rule ({rule.short()}) at "
            f"λ = {fmt_lam(earliest)} ({len(info.found)} of {n} seeds have an onset; {per_seed}).{note}")
    lo, hi = info.interval()
    shown = sorted({x for x in (lo, earliest, hi if hi is not None else grid[-1]) if x is not None})
    means = [(x, _mean_at(runs, x, "parse")) for x in shown]
    text += " Mean strict parse rate over seeds: " + ", ".join(
        f"{fmt(m)} at λ = {fmt_lam(x)}" for x, m in means if m is not None) + "."
    text += f" The cliff interval (the union of the seeds' brackets) is {interval_text((lo, hi))}"
    if len(info.found) < n:
        text += f" ({n - len(info.found)} of {n} seeds have no onset in it)"
    text += f"; {star}" + _placement(info.contains(pred.lambda_star), pred.lambda_star, lo) + "."
    if lo is not None:
        text += _ndcg_sentence(runs, lo)
    return text


def _placement(inside: bool | None, lam_star: float | None, lo: float | None) -> str:
    if inside is None:
        return ""
    if inside:
        return ", which lies inside it"
    return ", which lies below it" if lo is not None and lam_star <= lo else ", which lies above it"


def _ndcg_sentence(runs: list[RunResult], up_to: float) -> str:
    """The range of the per-λ mean NDCG@1 (parsed, strict) over the grid points up to `up_to`."""
    lams = sorted({r.lam for r in runs if r.lam <= up_to})
    parsed = [m for m in (_mean_at(runs, lam, "ndcg_parsed") for lam in lams) if m is not None]
    strict = [m for m in (_mean_at(runs, lam, "ndcg_strict") for lam in lams) if m is not None]
    if not parsed:
        return ""
    if max(parsed) - min(parsed) < 0.0005:
        text = f" Up to λ = {fmt_lam(up_to)}, the mean NDCG@1 on parsed outputs is {parsed[0]:.3f} at every λ"
    else:
        text = (f" Up to λ = {fmt_lam(up_to)}, the mean NDCG@1 on parsed outputs ranges {min(parsed):.3f}–"
                f"{max(parsed):.3f} across λ (spread {max(parsed) - min(parsed):.3f})")
    if strict:
        text += f"; NDCG@1 strict ranges {min(strict):.3f}–{max(strict):.3f}"
    return text + "."


TEST_TITLES = {"fine_grid": "1. fine-grid cliff interval", "budget_extension": "2. budget extension",
               "small_clip": "3. small-clip cross-prediction"}
VERDICTS = {"pass": "**pass**", "fail": "**FAIL**", "incomplete": "incomplete"}


def _status(test: dict) -> str:
    """pass / fail / incomplete (prereg_result.json's status; else from passed: True / False / None)."""
    status = test.get("status")
    if status in VERDICTS:
        return status
    return {True: "pass", False: "fail"}.get(test.get("passed"), "incomplete")


def _tests(verdicts) -> list[dict] | None:
    if isinstance(verdicts, dict) and isinstance(verdicts.get("tests"), list):
        return [t for t in verdicts["tests"] if isinstance(t, dict)]
    return None


def _verdict_finding(verdicts) -> str:
    tests = _tests(verdicts)
    if tests is None:
        return "The pre-registered tests were not evaluated (no prereg_result.json)."
    by_status = defaultdict(list)
    for t in tests:
        by_status[_status(t)].append(str(t.get("name")))
    text = f"Pre-registered tests: {len(by_status['pass'])} of {len(tests)} passed"
    if by_status["fail"]:
        text += f"; failed: {', '.join(by_status['fail'])}"
    if by_status["incomplete"]:
        text += f"; incomplete (missing results): {', '.join(by_status['incomplete'])}"
    return text + "."


def section_verdicts(verdicts, prereg) -> list[str]:
    lines = ["## Pre-registered tests", ""]
    locked = prereg.get("tests") if isinstance(prereg, dict) else None
    if isinstance(locked, dict) and locked:
        lines += [f"Locked {prereg.get('locked_at', '(time not recorded)')}:", ""]
        lines += [f"- {TEST_TITLES.get(name, name)}: {fmt_value(t.get('prediction'))}"
                  for name, t in locked.items() if isinstance(t, dict)]
        lines.append("")
    tests = _tests(verdicts)
    if tests is None:
        return lines + ["Not evaluated: no readable prereg_result.json in the sweep folder.", ""]
    if isinstance(verdicts, dict) and verdicts.get("overall"):
        partial = f"; partial: {len(verdicts.get('missing') or [])} runs missing" if verdicts.get("partial") else ""
        overall = str(verdicts["overall"]).upper()
        lines += [f"Checked {verdicts.get('checked_at', '—')}: overall **{overall}**{partial}.", ""]
    rows = []
    for t in tests:
        name = str(t.get("name"))
        rows.append([TEST_TITLES.get(name, name), VERDICTS[_status(t)], fmt_value(t.get("predicted")),
                     fmt_value(t.get("window")), fmt_value(t.get("observed")), fmt_value(t.get("detail"))])
    return lines + md_table(["test", "verdict", "predicted λ*", "window", "observed", "detail"], rows) + [""]


def section_sweep_tables(groups, preds, onsets) -> list[str]:
    lines = ["## Per-λ numbers", ""]
    if not groups:
        return lines + ["No runs.", ""]
    for key, runs in groups.items():
        seeds = sorted({r.seed for r in runs})
        pred = preds[key[0]]
        lines += [f"### {group_title(*key)}", "",
                  _prediction_line(pred), "",
                  "Strict parse rate per seed (seeds " + ", ".join(map(str, seeds)) + "), and means over seeds:", ""]
        rows = []
        for lam in sorted({r.lam for r in runs}):
            by_seed = {r.seed: r for r in runs if r.lam == lam}
            cells = " / ".join(fmt(by_seed[s].parse) if s in by_seed else "—" for s in seeds)
            rows.append([fmt_lam(lam), cells, fmt(_mean_at(runs, lam, "parse")),
                         fmt(_mean_at(runs, lam, "ndcg_parsed")), fmt(_mean_at(runs, lam, "ndcg_strict"))])
        lines += md_table(["λ", "strict parse rate per seed", "mean parse", "mean NDCG@1 parsed",
                           "mean NDCG@1 strict"], rows) + [""]
        info = onsets[key]
        iv = info.interval()
        onset_cells = ", ".join(f"seed {s}: {onset_text(o, info.missing_at.get(s), info.last_at.get(s))}"
                                for s, o in info.per_seed.items())
        lines.append(f"Onsets: {onset_cells}.")
        if iv is not None:
            lo, hi = iv
            lines.append(f"Cliff interval over seeds: {interval_text(iv)}; onsets range "
                         f"[{fmt_lam(min(info.found))}, {fmt_lam(max(info.found))}].")
        lines.append("")
    return lines


def _prediction_line(pred: Prediction) -> str:
    def one(value, ci, label, form):
        text = f"{label} = {fmt(value, 4)}" + (f" (95% interval [{ci[0]:.4f}, {ci[1]:.4f}])" if ci else "")
        return text + (" — the tested form" if form == pred.form else "")

    return (f"Predicted {one(pred.pb, pred.pb_ci, 'λ*(p,b,c)', 'pb')}; "
            f"{one(pred.base_neutral, pred.base_neutral_ci, 'base-neutral λ*(p,c)', 'base_neutral')}. "
            f"Source: {pred.source}.")


def section_calibration(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Calibration", ""]
    cal = inp.calibration
    if cal is None:
        return lines + ["Missing: no calibration.json was found, so there is no per-role table; λ* comes from "
                        "prereg.json or the runs' cliff_p / cliff_b where they have them (the per-λ tables name "
                        "the source).", ""]
    ci = cal.get("lambda_star_ci")
    lines.append(f"Calibrated at c = {fmt_value(cal.get('c'))} on {fmt_value(cal.get('n_tasks'))} tasks "
                 f"({fmt_value(cal.get('n_positions'))} positions). Binding role: "
                 f"**{fmt_value(cal.get('binding_role'))}**, p = {fmt(_number(cal.get('p')), 6)}, "
                 f"b = {fmt(_number(cal.get('b')), 6)}, "
                 f"predicted λ*(p,b,c) = {fmt(_number(cal.get('lambda_star')), 4)}"
                 + (f" (95% bootstrap interval [{ci[0]:.4f}, {ci[1]:.4f}])" if ci else "")
                 + f", base-neutral λ*(p,c) = {fmt(_number(cal.get('lambda_star_base_neutral')), 4)}.")
    lines.append("")
    rows = []
    roles = cal.get("roles") if isinstance(cal.get("roles"), dict) else {}
    if not roles:
        return lines + ["The calibration file has no per-role table.", ""]
    for role, v in sorted(roles.items(), key=lambda kv: (kv[0].startswith("id_"), kv[0])):
        name = f"**{role}** (binding)" if role == cal.get("binding_role") else role
        rows.append([name, fmt_value(v.get("n")), fmt(_number(v.get("p")), 6), fmt(_number(v.get("b")), 6),
                     fmt(_stored_lambda_star(v.get("lambda_star")), 4),
                     fmt(_stored_lambda_star(v.get("lambda_star_base_neutral")), 4)])
    lines += md_table(["role", "positions", "p (teacher)", "b (warm start)", "λ*(p,b,c)", "λ*(p,c)"], rows)
    if any("∞" in row for row in rows):
        lines += ["", "(λ* = ∞: extrapolation never leaves the clip-safe region at that role: b ≥ p; "
                      "calibration.json writes it as null.)"]
    fails = cal.get("failure_roles")
    if isinstance(fails, dict) and fails:
        lines += ["", "Where the warm start's own greedy outputs first break the contract: "
                  + ", ".join(f"{k} {v}" for k, v in fails.items()) + "."]
    png = inp.calibration_path.parent / "calibration.png"
    if png.is_file():
        if png.resolve() != (out_dir / "calibration.png").resolve():
            shutil.copyfile(png, out_dir / "calibration.png")
        lines += ["", "![λ* per structural role](calibration.png)"]
    else:
        lines += ["", "(No calibration.png beside the calibration file.)"]
    return lines + [""]


def section_size_axis(inp: Inputs, groups, preds) -> list[str]:
    lines = ["## Size axis", ""]
    rows = list(inp.size_rows)
    if not rows:
        student = student_from_sweep(groups, preds)
        if student is not None:
            rows.append(student)
        lines += ["No size-axis file: the teacher (larger SFT model) and the SFT warm start are missing. "
                  "Pass `--size-axis FILE` (a JSON list of {name, parameters, strict_parse_rate, "
                  "ndcg@1_parsed, ndcg@1_strict}).", ""]
    if not rows:
        return lines + ["No rows.", ""]
    table = [[fmt_value(r.get("name")), fmt_parameters(r.get("parameters")), fmt(_number(r.get("strict_parse_rate"))),
              fmt(_number(r.get("ndcg@1_parsed"))), fmt(_number(r.get("ndcg@1_strict")))] for r in rows]
    return lines + md_table(["model", "parameters", "strict parse rate", "NDCG@1 parsed", "NDCG@1 strict"],
                            table) + [""]


# ---------------------------------------------------------------------------------------------------------
# the constrained-decoding baseline


def load_baselines(paths: list[Path]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """The `listopd constrained` result files that read as such; a problem line for each that does not."""
    found, problems = [], []
    for path in paths:
        data, problem = read_optional_json(path)
        if problem:
            problems.append(f"baseline: {problem}")
        elif not (isinstance(data, dict) and data.get("kind") == "constrained_decoding_baseline"
                  and isinstance(data.get("rows"), list)):
            problems.append(f"baseline: {path} is not a `listopd constrained` result")
        else:
            found.append((path, data))
    return found, problems


def _decoding_mode(data: dict) -> str:
    d = data.get("decoding") or {}
    return "greedy" if d.get("greedy", True) else f"T = {fmt_value(d.get('temperature'))}"


def section_baselines(inp: Inputs, groups, preds) -> list[str]:
    """Strict parse and NDCG@1 with and without constrained decoding, tokens/s, beside the ListOPD student."""
    if not inp.baselines:
        return []
    lines = ["## Constrained decoding baseline", "",
             "Would constrained decoding alone fix the format? Each baseline decodes the same tasks with one model, "
             "unconstrained and with a JSON-schema grammar (and, where run, our contract automaton as the mask); "
             "tokens/s is wall clock over the same loop and batch size on the machine named below.", ""]
    rows = []
    student = student_from_sweep(groups, preds)
    if student is not None:
        decoding = f"unconstrained, {student.get('decoding', 'greedy')}"
        rows.append([fmt_value(student["name"]), decoding, "sweep validation",
                     fmt(_number(student["strict_parse_rate"])), fmt(_number(student["ndcg@1_parsed"])),
                     fmt(_number(student["ndcg@1_strict"])), "—"])
    notes = []
    for path, data in inp.baselines:
        mode = _decoding_mode(data)
        for row in data["rows"]:
            if not isinstance(row, dict):
                continue
            rows.append([fmt_value(data.get("model")), f"{fmt_value(row.get('label') or row.get('decoding'))}, {mode}",
                         fmt(data.get("n_tasks")), fmt(_number(row.get("strict_parse_rate"))),
                         fmt(_number(row.get("ndcg@1_parsed"))), fmt(_number(row.get("ndcg@1_strict"))),
                         fmt(_number(row.get("tokens_per_second")), 0)])
        engine = data.get("engine") or {}
        d = data.get("decoding") or {}
        machine = data.get("machine") or {}
        note = (f"`{path.name}`: {fmt_value(data.get('model'))} on {fmt_value(data.get('tasks'))}, {mode}, batch "
                f"{fmt_value(d.get('batch_size'))}, at most {fmt_value(d.get('max_new_tokens'))} new tokens, "
                f"{fmt_value(machine.get('device'))}, torch threads {fmt_value(machine.get('torch_threads'))}")
        if engine:
            missing = data.get("not_enforced") or []
            note += (f"; engine {fmt_value(engine.get('name'))} {fmt_value(engine.get('version'))}, "
                     f"{fmt_value(engine.get('format'))}; **not enforced by the engine: "
                     f"{', '.join(missing) if missing else 'nothing'}**")
        notes.append(f"- {note}.")
    table = md_table(["model", "decoding", "tasks", "strict parse rate", "NDCG@1 parsed", "NDCG@1 strict",
                      "tokens/s"], rows)
    return lines + table + [""] + notes + [""]


FIGURES = ("parse_rate.png", "ndcg.png", "onsets.png", MECHANISM_FIGURE, ID_SLOTS_FIGURE)


def section_figures(scored, preds, onsets, rule: OnsetRule, out_dir: Path) -> list[str]:
    lines = ["## Figures", ""]
    if not scored:
        return lines + ["No figures: no run has a final strict parse rate.", ""]
    plot_parse_rate(scored, preds, rule, out_dir / "parse_rate.png")
    lines += ["### Strict parse rate against λ", "",
              "One line per seed; dashed red: the predicted λ*, shaded: its bootstrap interval; dash-dot gray: "
              "the onset threshold.", "", "![strict parse rate against λ](parse_rate.png)", "",
              "### NDCG@1 against λ", ""]
    if any(r.ndcg_parsed is not None or r.ndcg_strict is not None for runs in scored.values() for r in runs):
        plot_ndcg(scored, preds, out_dir / "ndcg.png")
        lines += ["![NDCG@1 against λ](ndcg.png)", ""]
    else:
        lines += ["No NDCG@1 values in the results.", ""]
    plot_onsets(scored, onsets, preds, rule, out_dir / "onsets.png")
    return lines + ["### Onsets", "", "Dot: the seed's onset; bracket: the grid step it lies in; gray band: the "
                    "cliff interval (the union of the seeds' brackets).", "", "![onset per seed](onsets.png)", ""]


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None, *, calibration: str | None = None,
                 size_axis: str | None = None, baselines: list[str] | None = None,
                 onset: tuple[float, float | None] | None = None) -> Path:
    """Write OUT/report.md and its figures; returns the report's path. Never fails on a missing input.

    `onset` = (threshold, drop or None) sets the onset rule of a sweep without a locked one (a locked rule in
    prereg.json wins: a report cannot re-judge a pre-registered sweep by another rule)."""
    from listopd.util.io import atomic_write_text

    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:  # a figure from an earlier report must not outlive its data
        (out_dir / name).unlink(missing_ok=True)
    inp = gather(sweep_dir, calibration, size_axis, baselines)
    rule = onset_rule(inp.prereg, inp.prereg_result, onset)
    groups = inp.sweep.groups()
    preds = {c: predict(c, inp.calibration, inp.prereg, inp.sweep.runs) for c in sorted({key[0] for key in groups})}
    scored = {key: [r for r in runs if r.parse is not None] for key, runs in groups.items()}
    scored = {key: runs for key, runs in scored.items() if runs}
    onsets = {key: group_onsets(groups[key], inp.sweep.planned(key), rule) for key in scored}

    lines = ["# ListOPD sweep report", "",
             f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from `{sweep_dir}`.", ""]
    lines += ["## What the data says", ""]
    lines += [f"- {s}" for s in findings(scored, preds, onsets, rule, inp.prereg_result)]
    lines += [""] + section_inputs(inp, rule) + section_verdicts(inp.prereg_result, inp.prereg)
    lines += section_figures(scored, preds, onsets, rule, out_dir)
    lines += section_sweep_tables(scored, preds, onsets)
    if scored:
        c_main = max(scored, key=lambda key: len(scored[key]))[0]
        lines += section_mechanism(sweep_dir, inp.sweep.runs, inp.calibration, out_dir, preds[c_main].lambda_star)
    lines += section_calibration(inp, out_dir)
    lines += section_size_axis(inp, scored, preds)
    lines += section_baselines(inp, scored, preds)
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
