"""λ sweeps: many ListOPD runs from one YAML file, resumable, one result file per finished run.

The YAML file (paths in it are relative to the working directory, as in `listopd opd --config`):

    out: runs/sweep_fashion            # the sweep folder OUT
    base:                              # any OPDConfig option except out / allow_above_cliff
      student: runs/warm/final
      teacher: runs/teacher/final
      tasks: data/train.jsonl
      val_tasks: data/validation.jsonl # required: the onset is read from the final validation
      calibration: runs/calibration/calibration.json
      lr: 1.0e-5
      batch_size: 64
    grid:                              # one block (a mapping) or a list of blocks
      - reward_scale: [1.15, 1.175, 1.2, 1.225, 1.25, 1.275]
        seed: [0, 1, 2, 3, 4]
        clip_strength: 5
        steps: [200]
      - reward_scale: [1.05, 1.1, 1.15, 1.2]
        seed: [0, 1, 2]
        clip_strength: 2
        steps: 200
    prereg:                            # optional: the pre-registered tests (see listopd.experiment.prereg)
      ...

Grid: every block is a Cartesian product of its lists (`reward_scale` λ, `seed`, `clip_strength` c,
`steps` the budget T, and optionally `lr` and `contract_aware`); a key left out takes the base value (or the
OPDConfig default); a scalar is a list of one. The sweep is the union of the blocks: a run in two blocks runs
once.

Run order (fixed): blocks in file order; inside a block contract_aware, then lr, clip_strength, steps, seed,
then λ (innermost, as listed). A run that appears again in a later block keeps its first place.

Run name: `lam{λ}_c{c}_s{seed}_T{steps}`, e.g. `lam1.200_c5_s0_T200` (λ with three decimals, more when
needed to be exact), with `_lr{lr}` appended for a learning rate other than the base one (the lr axis of
pre-registered test 4, e.g. `lam2.500_c5_s0_T900_lr0.0001`) and `_aware` / `_plain` for a `contract_aware`
other than the base one (test 7); such a run's grid point carries `lr` / `contract_aware`, the others do
not, so that the (c, T, seed) series of the tests and reports are the base's.

Run folder OUT/runs/NAME/ is an ordinary `listopd opd` run folder, so an interrupted run resumes from its last
checkpoint; the sweep adds OUT/runs/NAME/sweep_run.json holding the UTC time the run first started. When a run finishes, OUT/results/NAME.json is written atomically (see `result_record`).
Re-running the same command skips runs with a result file and resumes the others; a result or run folder
made with a different run config is refused (move it away or restore the config).

Every run gets allow_above_cliff = true (a sweep crosses λ* on purpose); the result file records it.
With a prereg: section, `listopd sweep` refuses to start until `listopd prereg lock` has locked this very
config (the config hash is over the parsed YAML, so comments and layout do not count); --unlocked overrides.

Everything is checked before the first run starts: unknown keys (file named), grid values, every run's
OPDConfig, that the model, task and calibration paths exist, and the prereg section.

The onset of a (c, T, seed) series (`listopd.core.onset.find_onset`, the one definition used by `listopd
prereg` and reports) is read from the final validation strict parse rate in the result files (`result_rates`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import itertools
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from listopd.util.config import config_from_dict, read_yaml
from listopd.util.errors import InputError, ListopdError
from listopd.train.opd_config import OPDConfig
from listopd.experiment.prereg_spec import PreregSpec, parse_spec

TOP_KEYS = ("out", "base", "grid", "prereg")
GRID_KEYS = ("reward_scale", "seed", "clip_strength", "steps", "lr", "contract_aware")
SET_BY_SWEEP = ("out", "allow_above_cliff")
RATE_KEY = "val_strict_parse_rate"
RESULT_VERSION = 1
RUN_ORDER = ("grid blocks in file order; inside a block contract_aware, lr, then clip_strength, steps, seed, then "
             "reward_scale (innermost, as listed); a run repeated in a later block keeps its first place")


# ------------------------------------------------------------------------------------------------ the plan

@dataclass
class Run:
    """One grid point: its name, its λ / c / T / seed (and lr when not the base one), and its full validated
    OPDConfig."""
    name: str
    reward_scale: float
    clip_strength: float
    steps: int
    seed: int
    config: OPDConfig
    lr: float | None = None  # None: the base learning rate
    contract_aware: bool | None = None  # None: the base objective

    def point(self) -> dict:
        point = {"name": self.name, "reward_scale": self.reward_scale, "clip_strength": self.clip_strength,
                 "steps": self.steps, "seed": self.seed}
        off_base = {"lr": self.lr, "contract_aware": self.contract_aware}
        return {**point, **{k: v for k, v in off_base.items() if v is not None}}


@dataclass
class Sweep:
    path: str            # the YAML file
    raw: dict            # its parsed contents
    out: Path            # OUT
    runs: list[Run]      # in run order
    config_hash: str     # sha256 of the canonical JSON of `raw`
    prereg: PreregSpec | None = None  # when the file has a prereg: section

    def run_dir(self, run: Run) -> Path:
        return self.out / "runs" / run.name

    def result_path(self, run: Run) -> Path:
        return self.out / "results" / f"{run.name}.json"


def hash_json(obj) -> str:
    """The one serialisation that hashes are computed over: sorted keys, no spaces, UTF-8 (not the
    ranking's JSON text, which is `listopd.task.contract.canonical_json`)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_of(obj) -> str:
    return hashlib.sha256(hash_json(obj).encode("utf-8")).hexdigest()


def _fmt_lambda(x: float) -> str:
    """Three decimals, or as many (up to 8) as it takes to give the value back exactly."""
    for decimals in range(3, 9):
        text = f"{x:.{decimals}f}"
        if float(text) == x:
            return text
    return repr(x)


def run_name(reward_scale: float, clip_strength: float, seed: int, steps: int, lr: float | None = None,
             contract_aware: bool | None = None) -> str:
    name = f"lam{_fmt_lambda(reward_scale)}_c{clip_strength:g}_s{seed}_T{steps}"
    name += "" if lr is None else f"_lr{lr:g}"
    return name + ("" if contract_aware is None else "_aware" if contract_aware else "_plain")


def _as_list(value, key: str, source: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ListopdError(f"{source}: grid key '{key}' is an empty list")
    if key == "contract_aware":
        if not all(isinstance(v, bool) for v in values):
            raise ListopdError(f"{source}: grid key 'contract_aware' needs true/false; got {values!r}")
        return list(dict.fromkeys(values))
    want_int = key in ("seed", "steps")
    if key == "lr":  # YAML 1.1 reads 1e-4 (no dot) as a string
        values = [_float_text(v) for v in values]
    for v in values:
        ok = (isinstance(v, int) if want_int else isinstance(v, (int, float))) and not isinstance(v, bool)
        if not ok or (not want_int and not math.isfinite(v)):
            raise ListopdError(f"{source}: grid key '{key}' needs {'integers' if want_int else 'numbers'}; "
                               f"got {v!r}")
    values = [int(v) if want_int else float(v) for v in values]
    return list(dict.fromkeys(values))  # drop repeats, keep order


def _float_text(v):
    try:
        return float(v) if isinstance(v, str) else v
    except ValueError:
        return v


def _grid_blocks(grid, path: str) -> list[dict]:
    if grid is None:
        grid = {}
    blocks = grid if isinstance(grid, list) else [grid]
    for i, block in enumerate(blocks):
        where = f"{path}: grid" + (f" block {i + 1}" if isinstance(grid, list) else "")
        if not isinstance(block, dict):
            raise ListopdError(f"{where}: must be a mapping of {', '.join(GRID_KEYS)} to lists")
        unknown = sorted(set(block) - set(GRID_KEYS))
        if unknown:
            raise ListopdError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                               f"known: {', '.join(GRID_KEYS)}")
    return blocks


def _check_paths(cfg: OPDConfig, source: str) -> None:
    """Model folders, task files and the calibration file must exist now, not hours into the sweep."""
    from listopd.train.models import SMOLLM2_NAME

    for key in ("student", "teacher", "base"):
        value = getattr(cfg, key)
        if value and value != SMOLLM2_NAME and not Path(value).exists():
            raise InputError(f"base: '{key}' not found: {value}", path=source)
    for key in ("tasks", "val_tasks", "calibration"):
        value = getattr(cfg, key)
        if value and not Path(value).is_file():
            raise InputError(f"base: '{key}' file not found: {value}", path=source)


def _build_config(data: dict, source: str) -> OPDConfig:
    """config_from_dict with `source` named in every error (validate() alone does not name it)."""
    try:
        return config_from_dict(OPDConfig, data, source=source)
    except ListopdError as e:
        if str(e).startswith(source):
            raise
        raise ListopdError(f"{source}: {e}") from None


def load_sweep(path: str) -> Sweep:
    """Read and check a sweep YAML file: every run's OPDConfig is built and validated here."""
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise ListopdError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(TOP_KEYS)}")
    if not isinstance(raw.get("out"), str) or not raw["out"]:
        raise ListopdError(f"{path}: 'out' (the sweep folder) is required")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ListopdError(f"{path}: 'base' must be a mapping of OPD options")
    fixed = sorted(set(base) & set(SET_BY_SWEEP))
    if fixed:
        raise ListopdError(f"{path}: base: {', '.join(fixed)} is set by the sweep for every run; remove it")
    out = Path(raw["out"])
    base_cfg = _build_config({**base, "out": str(out)}, source=f"{path}: base")
    if not base_cfg.val_tasks:
        raise ListopdError(f"{path}: base: val_tasks is required (the onset is read from the final validation)")
    _check_paths(base_cfg, path)

    runs: dict[str, Run] = {}
    for block in _grid_blocks(raw.get("grid"), path):
        lists = {k: _as_list(block[k], k, f"{path}: grid") if k in block else [getattr(base_cfg, k)]
                 for k in GRID_KEYS}
        # run order: contract_aware, lr, then clip_strength, steps, seed, and λ innermost (RUN_ORDER)
        for aware, lr, c, steps, seed, lam in itertools.product(
                *(lists[k] for k in ("contract_aware", "lr", "clip_strength", "steps", "seed", "reward_scale"))):
            off_lr = None if lr == base_cfg.lr else lr
            off_aware = None if aware == base_cfg.contract_aware else aware
            name = run_name(lam, c, seed, steps, off_lr, off_aware)
            if name in runs:
                if (runs[name].reward_scale, runs[name].clip_strength) != (lam, c):
                    raise ListopdError(f"{path}: two grid points share the run name {name}")
                continue
            data = {**base, "reward_scale": lam, "clip_strength": c, "steps": steps, "seed": seed, "lr": lr,
                    "contract_aware": aware, "out": str(out / "runs" / name), "allow_above_cliff": True}
            cfg = _build_config(data, source=f"{path}: run {name}")
            runs[name] = Run(name, lam, c, steps, seed, cfg, off_lr, off_aware)
    sweep = Sweep(path=path, raw=raw, out=out, runs=list(runs.values()), config_hash=sha256_of(raw))
    if not sweep.runs:
        raise ListopdError(f"{path}: the grid is empty")
    if raw.get("prereg") is not None:
        sweep.prereg = parse_spec(raw["prereg"], sweep.runs, source=f"{path}: prereg")
    return sweep


def select(sweep: Sweep, pattern: str | None) -> list[Run]:
    """Runs whose name matches `pattern` (fnmatch glob; a pattern without * ? [ matches as a substring)."""
    if not pattern:
        return list(sweep.runs)
    glob = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
    chosen = [r for r in sweep.runs if fnmatch.fnmatchcase(r.name, glob)]
    if not chosen:
        raise ListopdError(f"--only {pattern!r} matches none of the {len(sweep.runs)} runs "
                           f"(e.g. {sweep.runs[0].name})")
    return chosen


# ----------------------------------------------------------------------------------------- run state

def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable JSON: {e}", path=str(path)) from None


def run_status(sweep: Sweep, run: Run) -> tuple[str, int]:
    """("done", T) with a result file; ("partial", k) with a run folder (k = last checkpoint step, 0 if
    none); ("todo", 0) otherwise."""
    if sweep.result_path(run).exists():
        return "done", run.steps
    folder = sweep.run_dir(run)
    if folder.exists():
        from listopd.train.checkpoint import latest_checkpoint

        found = latest_checkpoint(folder)
        return "partial", (found[1]["step"] if found else 0)
    return "todo", 0


def _config_differences(stored: dict, cfg: OPDConfig) -> list[str]:
    planned = dataclasses.asdict(cfg)
    # Run folders written before the cliff check got its own key in config.json hold the (p, b) it read from
    # the calibration file in cliff_p / cliff_b; with a calibration file configured those are derived, not
    # options (the file's path is compared).
    derived = ("cliff_p", "cliff_b") if cfg.calibration else ()
    return sorted(k for k in planned if k in stored and stored[k] != planned[k] and k not in derived)


def check_existing(sweep: Sweep, run: Run) -> None:
    """Refuse a result file or run folder that was made with a different config for this run name."""
    for what, path in (("result", sweep.result_path(run)), ("run folder", sweep.run_dir(run) / "config.json")):
        data = read_json(path)
        if data is None:
            continue
        stored = data.get("config", {}) if what == "result" else data
        diff = _config_differences(stored, run.config)
        if diff:
            raise ListopdError(f"the {what} of {run.name} ({path}) was made with a different config "
                               f"({', '.join(diff)} differ); move it away or restore the config")


def metrics_records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def train_seconds(records: list[dict]) -> float:
    """Training time summed over a metrics log. `elapsed_s` restarts at 0 when a run resumes, so each
    record adds its increase over the record before, or its whole value where the clock restarted."""
    total, previous = 0.0, None
    for rec in records:
        t = rec.get("elapsed_s")
        if t is None:
            continue
        total += t - previous if previous is not None and t >= previous else t
        previous = t
    return total


def code_version() -> dict:
    """listopd.__version__, and the git commit and dirty flag of the source tree when git is there."""
    from listopd import __version__

    info = {"listopd": __version__, "git_commit": None, "git_dirty": None}
    where = Path(__file__).resolve().parents[1]  # the package folder (src/listopd)
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never refresh the index

    def git(*args):
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=20, env=env)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode == 0:
            info["git_commit"] = head.stdout.strip()
            status = git("status", "--porcelain", "--untracked-files=no")
            if status.returncode == 0:
                info["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def result_record(sweep: Sweep, run: Run, summary: dict, started_at: str, ended_at: str) -> dict:
    """What OUT/results/NAME.json holds."""
    records = metrics_records(sweep.run_dir(run))
    validation = [{k: v for k, v in r.items() if k == "step" or k.startswith("val_")}
                  for r in records if any(k.startswith("val_") for k in r)]
    steps = len(records)
    seconds = train_seconds(records)
    return {"version": RESULT_VERSION, "name": run.name, "grid_point": run.point(),
            "sweep_config_hash": sweep.config_hash, "config": dataclasses.asdict(run.config),
            "allow_above_cliff": run.config.allow_above_cliff, "summary": summary, "validation": validation,
            "steps_logged": steps, "train_seconds": round(seconds, 3),
            "step_time_s": (seconds / steps) if steps else None,
            "started_at": started_at, "ended_at": ended_at, "code_version": code_version()}


# ------------------------------------------------------------------------------------------- running

def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def plan_record(sweep: Sweep) -> dict:
    """OUT/sweep.json: the resolved plan and the config hash."""
    return {"config_file": sweep.path, "config_hash": sweep.config_hash, "config": sweep.raw,
            "order": RUN_ORDER, "written_at": utc_now(),
            "runs": [{**r.point(), "run_dir": str(sweep.run_dir(r)), "result": str(sweep.result_path(r))}
                     for r in sweep.runs]}


def check_lock(sweep: Sweep) -> str | None:
    """Why the sweep must not start for lack of a matching pre-registration, or None when it may."""
    if sweep.prereg is None:
        return None
    locked = read_json(sweep.out / "prereg.json")
    if locked is None:
        return (f"the config has a prereg: section but {sweep.out / 'prereg.json'} is missing; lock first "
                f"(listopd prereg lock {sweep.path}) or pass --unlocked")
    if locked.get("sweep_config_hash") != sweep.config_hash:
        return (f"{sweep.path} differs from the config locked in {sweep.out / 'prereg.json'}; restore it "
                f"or pass --unlocked (prereg check will then refuse these results)")
    return None


def run_one(sweep: Sweep, run: Run, *, quiet: bool = True, pool=None) -> dict:
    """Train (or resume) one run and write its result file; returns the result record. `pool`: the frozen
    models shared by the sweep's runs (train/frozen_pool.py)."""
    from listopd.util.io import atomic_write_json
    from listopd.train.opd import run_opd

    folder = sweep.run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "sweep_run.json"
    first = read_json(marker)
    if first is None:
        first = {"name": run.name, "started_at": utc_now(), "sweep_config_hash": sweep.config_hash}
        atomic_write_json(marker, first)
    summary = run_opd(run.config, quiet=quiet, pool=pool)
    record = result_record(sweep, run, summary, first["started_at"], utc_now())
    atomic_write_json(sweep.result_path(run), record)
    return record


def run_sweep(sweep: Sweep, *, only: str | None = None, quiet: bool = True, echo=print) -> dict:
    """Run the selected runs in order, skipping finished ones. Returns {"done": [...], "failed": {...}}.

    A run that fails with a ListopdError (e.g. a non-finite loss) is reported and the sweep goes on;
    re-running retries it from its last checkpoint. Any other exception stops the sweep."""
    from listopd.util.io import atomic_write_json, remove_stale_temporaries

    chosen = select(sweep, only)
    for run in chosen:
        check_existing(sweep, run)
    remove_stale_temporaries(sweep.out / "results")  # left by a sweep killed while writing a result
    atomic_write_json(sweep.out / "sweep.json", plan_record(sweep))
    todo_steps = {}  # name → steps still to train
    for run in chosen:
        status, step = run_status(sweep, run)
        if status != "done":
            todo_steps[run.name] = run.steps - step
    n, t_start, steps_done = len(chosen), time.time(), 0
    done, failed = [], {}
    pool = _frozen_pool() if todo_steps else None  # teacher, base and their prompt caches, loaded once
    with contextlib.closing(pool) if pool else contextlib.nullcontext():  # closing: its rollout-ahead worker
        for i, run in enumerate(chosen, 1):
            if run.name not in todo_steps:
                echo(f"[{i}/{n}] {run.name}  skipped (result exists)")
                done.append(run.name)
                continue
            t0 = time.time()
            try:
                record = run_one(sweep, run, quiet=quiet, pool=pool)
            except ListopdError as e:
                failed[run.name] = str(e)
                echo(f"[{i}/{n}] {run.name}  FAILED: {e}")
                todo_steps.pop(run.name)
                continue
            steps_done += todo_steps.pop(run.name)
            per_step = (time.time() - t_start) / max(steps_done, 1)
            rate = record["summary"].get(RATE_KEY)
            eta = per_step * sum(todo_steps.values())
            echo(f"[{i}/{n}] {run.name}  done in {_fmt_duration(time.time() - t0)}  "
                 f"val strict parse {rate if rate is None else f'{rate:.3f}'}  ETA {_fmt_duration(eta)}")
            done.append(run.name)
    return {"done": done, "failed": failed}


def _frozen_pool():
    from listopd.train.frozen_pool import FrozenPool

    return FrozenPool()


# -------------------------------------------------------------------------------------------- dry run

def measured_step_time(sweep: Sweep) -> tuple[float | None, str]:
    """Seconds per OPD step, and how it was found: from the finished runs' result files (training
    seconds over steps, from their metrics), else by timing 2 OPD steps of the first run in a temporary
    folder (without validation)."""
    seconds, steps, n = 0.0, 0, 0
    for run in sweep.runs:
        record = read_json(sweep.result_path(run))
        if record and record.get("steps_logged") and record.get("train_seconds"):
            seconds += record["train_seconds"]
            steps += record["steps_logged"]
            n += 1
    if steps:
        return seconds / steps, f"from {n} finished run(s)' metrics"
    return _time_two_steps(sweep.runs[0]), f"timed 2 OPD steps of {sweep.runs[0].name} (without validation)"


def _time_two_steps(run: Run) -> float:
    import tempfile

    from listopd.train.opd import run_opd

    with tempfile.TemporaryDirectory(prefix="listopd-sweep-timing-") as tmp:
        cfg = dataclasses.replace(run.config, out=tmp, steps=2, val_tasks=None, eval_every=0, save_every=2,
                                  warmup_steps=0)
        run_opd(cfg, quiet=True)
        records = metrics_records(Path(tmp))
        return train_seconds(records) / max(len(records), 1)


def dry_run(sweep: Sweep, *, only: str | None = None, echo=print, time_steps: bool = True) -> dict:
    """Print the plan (every run and its status) and the estimated remaining time. Writes nothing."""
    chosen = select(sweep, only)
    statuses = {r.name: run_status(sweep, r) for r in chosen}
    echo(f"sweep {sweep.path} → {sweep.out}   {len(sweep.runs)} runs, {len(chosen)} selected   "
         f"config sha256 {sweep.config_hash[:12]}")
    echo(f"order: {RUN_ORDER}")
    if sweep.prereg is not None:
        locked = read_json(sweep.out / "prereg.json")
        lock = ("not locked" if locked is None else
                f"locked at {locked.get('locked_at')}" + ("" if locked.get("sweep_config_hash") == sweep.config_hash
                                                         else " (for a DIFFERENT config)"))
        echo(f"prereg: {lock}")
    for i, run in enumerate(chosen, 1):
        status, step = statuses[run.name]
        shown = f"partial (step {step})" if status == "partial" else status
        echo(f"  {i:>4}/{len(chosen)}  {run.name:<28} {shown}")
    remaining = sum(r.steps - statuses[r.name][1] for r in chosen if statuses[r.name][0] != "done")
    counts = {s: sum(1 for v in statuses.values() if v[0] == s) for s in ("done", "partial", "todo")}
    plan = {"runs": len(chosen), **counts, "remaining_steps": remaining, "step_time_s": None,
            "step_time_source": None, "remaining_s": 0.0 if remaining == 0 else None}
    if remaining and time_steps:
        step_time, how = measured_step_time(sweep)
        plan.update(step_time_s=step_time, step_time_source=how, remaining_s=step_time * remaining)
        echo(f"{counts['done']} done, {counts['partial']} partial, {counts['todo']} todo; {remaining} steps left "
             f"× {step_time:.3g} s/step ({how}) ≈ {_fmt_duration(step_time * remaining)} "
             f"(plus validation and model loading)")
    else:
        echo(f"{counts['done']} done, {counts['partial']} partial, {counts['todo']} todo; {remaining} steps left")
    return plan


# ------------------------------------------------------------------------------------------- results

def result_rates(sweep_out: Path, points: list[dict], key: str = RATE_KEY) -> dict[str, float | None]:
    """name → the final validation strict parse rate (or another summary `key`) from OUT/results/NAME.json
    (None when missing)."""
    rates = {}
    for p in points:
        record = read_json(Path(sweep_out) / "results" / f"{p['name']}.json")
        rate = None if record is None else (record.get("summary") or {}).get(key)
        rates[p["name"]] = None if rate is None else float(rate)
    return rates
