"""The extrapolation cliff on the trainer's side: the calibration file it reads p and b from, the check that
refuses λ ≥ λ*(p, b, c) before training, and the guard that stops a run whose rollouts stop parsing
(docs/method.md#the-cliff-guard). Torch-free."""

from __future__ import annotations

import json
from pathlib import Path

from listopd.core import theory
from listopd.util.errors import InputError, ListopdError

CALIBRATION_VERSION = 1  # of calibration.json, written by `listopd calibrate` (experiment/calibrate.py)


def read_calibration_file(path: str) -> dict:
    """The JSON object of a calibration file (`listopd calibrate --out`), checked: "version" is
    CALIBRATION_VERSION and p and b are numbers in (0, 1). InputError names the file and the field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("calibration file not found", path=path) from None
    except (OSError, ValueError) as e:  # ValueError: not JSON, not UTF-8
        raise InputError(f"not a calibration file (unreadable JSON: {e})", path=path) from None
    if not isinstance(data, dict):
        raise InputError("not a calibration file (a JSON object with version, p and b)", path=path)
    if data.get("version") != CALIBRATION_VERSION:
        raise InputError(f"expected {CALIBRATION_VERSION} (a calibration.json written by `listopd calibrate`); "
                         f"got {data.get('version')!r}", path=path, field="version")
    for key in ("p", "b"):
        x = data.get(key)
        if x is None:
            raise InputError("missing: the calibration has no numbers p and b (no binding role?): nothing to "
                             "predict", path=path, field=key)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1:
            raise InputError(f"expected a number in (0, 1); got {x!r}", path=path, field=key)
    return data


def cliff_check(cfg) -> dict:
    """λ*(p, b, c) for a configured ListOPD run (an OPDConfig); refuses λ ≥ λ* unless allowed. Returns what it
    found ({} when the config gives no p and b)."""
    pb = cfg.cliff_pb()
    if pb is None:
        return {}
    p, b = pb
    lam_star = float(theory.lambda_star(p, b, cfg.clip_strength))
    info = {"cliff_p": p, "cliff_b": b, "lambda_star": lam_star}
    if getattr(cfg, "cliff_predictor", "closed_form") == "full_vocabulary":
        return _full_vocabulary_check(cfg, info)
    if cfg.clip_mode != "teacher_ratio":
        info["cliff_note"] = f"λ* assumes clip_mode teacher_ratio; this run uses {cfg.clip_mode}"
        return info
    if cfg.reward_scale >= lam_star and not cfg.allow_above_cliff:
        raise ListopdError(f"reward_scale λ = {cfg.reward_scale} is at or above the predicted cliff "
                           f"λ*(p={p:g}, b={b:g}, c={cfg.clip_strength:g}) = {lam_star:.4f}; "
                           f"use allow_above_cliff to train there anyway")
    return info


def _full_vocabulary_check(cfg, info: dict) -> dict:
    """The cliff check with the full-vocabulary predictor: refuse λ ≥ the onset of the calibration's
    full-vocabulary fixed point for this run's objective (the first grid λ past the peak where the predicted parse
    rate falls below the teacher's): contract-aware extrapolation's under `contract_aware`, the base_ratio rest
    point's under clip_mode base_ratio (computed at the calibration's c: it must be the run's), else q_λ's."""
    fv = read_calibration_file(cfg.calibration).get("full_vocabulary")
    if not isinstance(fv, dict) or "onset_lambda" not in fv:
        raise InputError("no full_vocabulary section: recalibrate with this version of `listopd calibrate`",
                         path=cfg.calibration, field="full_vocabulary")
    key = ("contract_aware" if getattr(cfg, "contract_aware", False)
           else "base_ratio_capped" if cfg.clip_mode == "base_ratio" else None)
    table = fv if key is None else fv.get(key)
    if not isinstance(table, dict) or "onset_lambda" not in table:
        raise InputError(f"no {key} section: recalibrate with this version of `listopd calibrate`",
                         path=cfg.calibration, field=f"full_vocabulary.{key}")
    if key == "base_ratio_capped" and table.get("c") != cfg.clip_strength:
        raise InputError(f"the base_ratio rest point was computed at c = {table.get('c')}, this run uses "
                         f"clip_strength {cfg.clip_strength:g}: calibrate with --c {cfg.clip_strength:g}",
                         path=cfg.calibration, field="full_vocabulary.base_ratio_capped.c")
    onset = table["onset_lambda"]
    info.update({"cliff_predictor": "full_vocabulary", "full_vocabulary_onset": onset,
                 "full_vocabulary_table": key or "q_lambda"})
    if onset is not None and cfg.reward_scale >= onset and not cfg.allow_above_cliff:
        what = {None: "", "contract_aware": " (contract-aware)", "base_ratio_capped": " (base_ratio rest point)"}[key]
        raise ListopdError(f"reward_scale λ = {cfg.reward_scale} is at or above the full-vocabulary predicted onset"
                           f"{what} λ = {onset:g} ({cfg.calibration}); use allow_above_cliff to train there anyway")
    return info


class ParseRateGuard:
    """Stops a run when the rollout parse rate, averaged over the last `window` steps, falls more than `margin`
    below its best such average. Its state (`best` and the step it was reached at, `best_step`, `history`, and
    `stopped` once it fired) is a plain dict saved in every checkpoint, so a resumed run continues it and a
    stopped run stays stopped. The trainer keeps the newest checkpoint at or before `best_step` and, when the
    guard stops a run, exports that checkpoint as final/ — the model before the drop, not the collapsed one."""

    def __init__(self, margin: float | None, window: int, state: dict | None = None):
        self.margin, self.window = margin, window
        self.state = state if state is not None else {"best": None, "history": []}

    @property
    def stopped(self) -> str | None:
        return self.state.get("stopped")

    @property
    def best_step(self) -> int | None:
        return self.state.get("best_step")

    def update(self, step: int, parse_rate: float) -> str | None:
        """Record one step's rollout parse rate; the reason to stop, or None (always None when off)."""
        if self.margin is None:
            return None
        s = self.state
        s["history"] = (s["history"] + [parse_rate])[-self.window:]
        if len(s["history"]) < self.window:
            return None
        level = sum(s["history"]) / self.window
        if s["best"] is None or level > s["best"]:
            s["best"], s["best_step"] = level, step
        if level < s["best"] - self.margin:
            s["stopped"] = (f"cliff guard: rollout parse rate {level:.3f} fell more than "
                            f"{self.margin} below its best {s['best']:.3f} at step {step}")
        return s.get("stopped")
