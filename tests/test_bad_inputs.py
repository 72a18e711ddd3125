"""Bad-input corpus: every malformed input gets exit code 2, exactly one line on stderr naming what is wrong
and where, no traceback, and nothing left behind.

Each case is a function of a Bench (a scratch folder plus the tiny trainer world) that writes its bad
input and returns (argv, a distinctive substring of the one-line error). After the refusal, the --out folder
(`Bench.out`, passed by every case with an output) must not exist and every file in the scratch folder
must be byte-for-byte what it was before the command ran (nothing written, nothing half-written). All
cases run in-process through `listopd.cli.main` (fast); `SUBPROCESS_CASES` run again as real
`python -m listopd` subprocesses with HF_HUB_OFFLINE=1, where stderr is the real stderr (warnings,
tracebacks and all).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from listopd.cli import main


@dataclass
class Bench:
    dir: Path
    world: object

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def good_record(self) -> dict:
        return json.loads(Path(self.world.train).read_text().splitlines()[0])

    def tasks(self, lines, name="bad.jsonl") -> str:
        """Write a task file whose lines are dicts (JSON-encoded), str or bytes (written as they are)."""
        path = self.dir / name
        data = b"".join((x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode())
                        + b"\n" for x in lines)
        path.write_bytes(data)
        return str(path)

    def record(self, **changes) -> dict:
        r = self.good_record()
        for k, v in changes.items():
            if v is DROP:
                r.pop(k)
            else:
                r[k] = v
        return r

    def score(self, tasks: str, outputs: str | None = None) -> list[str]:
        return ["score", "--tasks", tasks, "--outputs", outputs or self.outputs_ok(), "--n-boot", "10"]

    def outputs_ok(self) -> str:
        path = self.dir / "outputs_ok.jsonl"
        if not path.exists():
            path.write_text("".join(json.dumps({"id": json.loads(line)["id"], "output": "[]"}) + "\n"
                                    for line in Path(self.world.train).read_text().splitlines()))
        return str(path)

    def yaml(self, data, name="cfg.yaml") -> str:
        path = self.dir / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return str(path)

    def opd_cfg(self, **changes) -> list[str]:
        """`listopd opd --config cfg.yaml --out OUT` with the world's real models plus `changes`."""
        w = self.world
        data = {"student": w.student, "teacher": w.teacher, "tasks": w.train, "steps": 1, "batch_size": 4,
                "micro_batch_size": 2, "max_new_tokens": 8, "threads": 1, **changes}
        data = {k: v for k, v in data.items() if v is not DROP}
        return ["opd", "--config", self.yaml(data), "--out", str(self.out)]

    def sft(self, *extra: str, tasks: str | None = None, model: str = "tiny-student") -> list[str]:
        return ["sft", "--model", model, "--tokenizer", self.world.tok_dir, "--tasks", tasks or self.world.train,
                "--steps", "1", "--batch-size", "2", "--micro-batch-size", "2", "--threads", "1",
                "--out", str(self.out), *extra]

    def opd(self, *extra: str, student: str | None = None, teacher: str | None = None) -> list[str]:
        return ["opd", "--student", student or self.world.student, "--teacher", teacher or self.world.teacher,
                "--tasks", self.world.train, "--steps", "1", "--batch-size", "2", "--micro-batch-size", "2",
                "--max-new-tokens", "4", "--threads", "1", "--out", str(self.out), *extra]

    def model_dir(self, name: str, *, config=True, weights=True, tokenizer=True) -> Path:
        """A copy of the world's student folder with some of its parts left out."""
        src, dst = Path(self.world.student), self.dir / name
        dst.mkdir()
        for f in src.iterdir():
            is_config = f.name in ("config.json", "generation_config.json")
            is_weights = f.suffix == ".safetensors" or f.name.endswith(".bin")
            if (is_config and config) or (is_weights and weights) or (not is_config and not is_weights and tokenizer):
                shutil.copy(f, dst / f.name)
        return dst

    def calibration(self, data) -> str:
        path = self.dir / "calibration.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)

    def sweep(self, *, lock: bool) -> str:
        """A sweep YAML with a prereg section on the world's models; locked when `lock`."""
        w = self.world
        cal = self.calibration({"version": 1, "p": 0.999, "b": 0.9, "c": 3.0, "binding_role": "close_list"})
        grid = [{"reward_scale": [1.15, 1.2, 1.25, 1.3], "seed": [0], "clip_strength": 3, "steps": 10}]
        path = self.yaml({"out": str(self.dir / "sweep"),
                          "base": {"student": w.student, "teacher": w.teacher, "tasks": w.train,
                                   "val_tasks": w.val},
                          "grid": grid,
                          "prereg": {"calibration": cal, "onset_threshold": 0.5,
                                     "fine_grid": {"clip": 3, "budget": 10}}}, name="sweep.yaml")
        if lock:
            assert main(["prereg", "lock", path]) == 0
        return path


DROP = object()
CAL_OK = {"version": 1, "p": 0.999, "b": 0.9, "c": 5.0, "binding_role": "close_list"}


def _edit_prereg(b: Bench, change, rehash: bool) -> None:
    from listopd.experiment.sweep import sha256_of

    path = b.dir / "sweep" / "prereg.json"
    locked = json.loads(path.read_text())
    change(locked)
    if rehash:
        locked["content_sha256"] = sha256_of({k: v for k, v in locked.items() if k != "content_sha256"})
    path.write_text(json.dumps(locked))


def _prereg_case(b: Bench, change, rehash: bool) -> list[str]:
    path = b.sweep(lock=True)
    _edit_prereg(b, change, rehash)
    return ["prereg", "check", path]


def _deep_nesting(b: Bench) -> str:
    return b.tasks(["[" * 100_000 + "]" * 100_000])


# (id, case(bench) -> (argv, expected substring)); every case that has an --out passes b.out.
CASES = [
    # ------------------------------------------------------------------ task files (strict reader, via score)
    ("task-not-json", lambda b: (b.score(b.tasks([b.record(), "{not json"])), "bad.jsonl:2: not JSON")),
    ("task-trailing-garbage", lambda b: (b.score(b.tasks([json.dumps(b.record()) + "}"])), "bad.jsonl:1: not JSON")),
    ("task-array", lambda b: (b.score(b.tasks(["[1, 2]"])), "bad.jsonl:1: a task must be a JSON object")),
    ("task-missing-id", lambda b: (b.score(b.tasks([b.record(id=DROP)])), "bad.jsonl:1: field 'id': missing")),
    ("task-missing-split", lambda b: (b.score(b.tasks([b.record(split=DROP)])), "field 'split': missing")),
    ("task-missing-candidates", lambda b: (b.score(b.tasks([b.record(candidates=DROP)])),
                                           "field 'candidates': missing")),
    ("task-missing-relevance", lambda b: (b.score(b.tasks([b.record(relevance=DROP)])),
                                          "field 'relevance': missing")),
    ("task-unknown-field", lambda b: (b.score(b.tasks([b.record(relevanse={})])),
                                      "field 'relevanse': unknown field")),
    ("task-unknown-split", lambda b: (b.score(b.tasks([b.record(split="dev")])), "unknown split 'dev'")),
    ("task-context-not-string", lambda b: (b.score(b.tasks([b.record(context=["a"])])),
                                           "field 'context': must be a string")),
    ("task-empty-candidates", lambda b: (b.score(b.tasks([b.record(candidates=[], relevance={})])),
                                         "field 'candidates': must be a non-empty list")),
    ("task-duplicate-candidate-id",
     lambda b: (b.score(b.tasks([b.record(candidates=[{"id": "A", "text": "x"}, {"id": "A", "text": "y"}],
                                          relevance={"A": 1})])),
                "field 'candidates[1].id': duplicate candidate id 'A'")),
    ("task-candidate-id-int",
     lambda b: (b.score(b.tasks([b.record(candidates=[{"id": 1, "text": "x"}], relevance={"1": 1})])),
                "field 'candidates[0].id': must be a string, got int")),
    ("task-candidate-id-space",
     lambda b: (b.score(b.tasks([b.record(candidates=[{"id": "A B", "text": "x"}], relevance={"A B": 1})])),
                "field 'candidates[0].id': id 'A B' contains")),
    ("task-candidate-text-missing",
     lambda b: (b.score(b.tasks([b.record(candidates=[{"id": "A"}], relevance={"A": 1})])),
                "field 'candidates[0].text': missing")),
    ("task-relevance-unknown-id",
     lambda b: (b.score(b.tasks([b.record(relevance={**b.good_record()["relevance"], "ZZ": 1})])),
                "field 'relevance.ZZ': grade for unknown candidate id 'ZZ'")),
    ("task-relevance-missing-grade",
     lambda b: (b.score(b.tasks([b.record(relevance=dict(list(b.good_record()["relevance"].items())[1:]))])),
                "no grade for candidate")),
    ("task-relevance-nan", lambda b: (b.score(b.tasks([_relevance_literal(b, "NaN")])), "grade must be finite")),
    ("task-relevance-infinity",
     lambda b: (b.score(b.tasks([_relevance_literal(b, "Infinity")])), "grade must be finite")),
    ("task-relevance-negative", lambda b: (b.score(b.tasks([_relevance_literal(b, "-1")])), "grade must be in [0, 100]")),
    ("task-relevance-bool", lambda b: (b.score(b.tasks([_relevance_literal(b, "true")])), "grade must be a number")),
    ("task-relevance-string", lambda b: (b.score(b.tasks([_relevance_literal(b, '"2"')])), "grade must be a number")),
    ("task-duplicate-task-id", lambda b: (b.score(b.tasks([b.record(), b.record()])),
                                          "bad.jsonl:2: field 'id': duplicate task id")),
    ("task-duplicate-json-key", lambda b: (b.score(b.tasks([json.dumps(b.record())[:-1] + ', "id": "x"}'])),
                                           "key 'id' appears twice")),
    ("task-non-utf8", lambda b: (b.score(b.tasks([b.record(), json.dumps(b.record(id="x")).encode()[:-2] + b"\xff\"}"])),
                                 "bad.jsonl:2: not valid UTF-8")),
    ("task-empty-file", lambda b: (b.score(b.tasks([])), "bad.jsonl: empty file")),
    ("task-only-blank-lines", lambda b: (b.score(b.tasks(["", "   ", ""])), "bad.jsonl: empty file")),
    ("task-huge-line", lambda b: (b.score(b.tasks([b.record(context="x" * (1 << 20))])),
                                  "bad.jsonl:1: line longer than 1048576 bytes")),
    ("task-deep-nesting", lambda b: (b.score(_deep_nesting(b)), "bad.jsonl:1: not JSON")),
    ("task-missing-file", lambda b: (b.score(str(b.dir / "nope.jsonl")), "nope.jsonl: file not found")),
    ("task-is-directory", lambda b: (b.score(str(b.dir)), "cannot open")),
    ("task-corrupt-gzip", lambda b: (b.score(_corrupt_gzip(b)), "bad.jsonl.gz:1: corrupt gzip")),
    ("task-gzip-bad-deflate", lambda b: (b.score(_bad_deflate(b)), "bad.jsonl.gz:1: corrupt gzip")),  # fuzz find
    ("task-mixed-k-sft", lambda b: (b.sft(tasks=_mixed_k(b)), "(mixed K needs allow_mixed_k=True)")),
    ("task-bad-line-sft", lambda b: (b.sft(tasks=b.tasks([b.record(), "oops"])), "bad.jsonl:2: not JSON")),
    ("task-bad-val-file-opd", lambda b: (b.opd("--val-tasks", b.tasks([b.record(split=7)], name="val.jsonl")),
                                         "val.jsonl:1: field 'split': must be a string")),
    # ------------------------------------------------------------------ configs (YAML and validation)
    ("cfg-unknown-key", lambda b: (b.opd_cfg(lamda=1.2), "unknown option(s) 'lamda'")),
    ("cfg-steps-string", lambda b: (b.opd_cfg(steps="ten"), "option 'steps': expected an integer")),
    ("cfg-steps-bool", lambda b: (b.opd_cfg(steps=True), "option 'steps': expected an integer")),
    ("cfg-lr-string", lambda b: (b.opd_cfg(lr="fast"), "option 'lr': expected a number")),
    ("cfg-bf16-string", lambda b: (b.opd_cfg(bf16="yes please"), "option 'bf16': expected true or false")),
    ("cfg-required-null", lambda b: (b.opd_cfg(teacher=None), "option 'teacher': must not be null")),
    ("cfg-required-missing", lambda b: (b.opd_cfg(teacher=DROP), "missing required option(s) teacher")),
    ("cfg-lambda-zero", lambda b: (b.opd_cfg(reward_scale=0), "reward_scale (λ) must be a finite number > 0")),
    ("cfg-lambda-negative", lambda b: (b.opd_cfg(reward_scale=-1.5), "reward_scale (λ) must be a finite number > 0")),
    ("cfg-c-one", lambda b: (b.opd_cfg(clip_strength=1.0), "clip_strength (c) must be a finite number > 1")),
    ("cfg-c-below-one", lambda b: (b.opd_cfg(clip_strength=0.5), "clip_strength (c) must be a finite number > 1")),
    ("cfg-eps-low-zero", lambda b: (b.opd_cfg(eps_low=0.0), "eps_low (PPO ratio clip) must be in the open interval")),
    ("cfg-eps-high-one", lambda b: (b.opd_cfg(eps_high=1.0), "eps_high (PPO ratio clip) must be in the open interval")),
    ("cfg-clip-mode", lambda b: (b.opd_cfg(clip_mode="ppo"), "clip_mode must be one of")),
    ("cfg-batch-zero", lambda b: (b.opd_cfg(batch_size=0), "cfg.yaml: option 'batch_size' must be ≥ 1; got 0")),
    ("cfg-cliff-p-alone", lambda b: (b.opd_cfg(cliff_p=0.99), "cliff_p and cliff_b go together")),
    ("cfg-calibration-and-cliff", lambda b: (b.opd_cfg(cliff_p=0.99, cliff_b=0.5, calibration="c.json"),
                                             "give either calibration or cliff_p/cliff_b, not both")),
    ("cfg-base-at-lambda-one", lambda b: (b.opd_cfg(base=b.world.student), "base is ignored at reward_scale 1")),
    ("cfg-guard-margin", lambda b: (b.opd_cfg(guard_margin=1.5), "guard_margin must be in (0, 1)")),
    ("cfg-top-p", lambda b: (b.opd_cfg(top_p=0.0), "top_p must be in (0, 1]")),
    ("cfg-names-the-file", lambda b: (b.opd_cfg(steps=0), "cfg.yaml: option 'steps' must be ≥ 1; got 0")),
    ("cfg-not-yaml", lambda b: (["opd", "--config", b.yaml("steps: [1, 2\nlr: 3\n"), "--out", str(b.out)],
                                "cfg.yaml:2: not valid YAML")),
    ("cfg-not-mapping", lambda b: (["opd", "--config", b.yaml("- 1\n- 2\n"), "--out", str(b.out)],
                                   "cfg.yaml: a config file must be a mapping")),
    ("cfg-missing-file", lambda b: (["sft", "--config", str(b.dir / "nope.yaml"), "--out", str(b.out)],
                                    "nope.yaml: config file not found")),
    ("cfg-sft-schedule", lambda b: (["sft", "--config", b.yaml({"tasks": b.world.train, "schedule": "linear"}),
                                     "--out", str(b.out)], "schedule must be constant or cosine")),
    ("cfg-sweep-unknown-key", lambda b: (["sweep", b.yaml({"out": str(b.out), "gird": {}}, name="sw.yaml")],
                                         "sw.yaml: unknown key(s) 'gird'")),
    # ------------------------------------------------------------------ command-line arguments
    ("arg-not-int", lambda b: (b.opd("--steps", "abc"), "argument --steps: expected an integer, got 'abc'")),
    ("arg-not-float", lambda b: (b.opd("--reward-scale", "1,2"), "argument --reward-scale: invalid float value")),
    ("arg-bad-bool", lambda b: (b.opd("--bf16", "maybe"), "argument --bf16: expected true/false")),
    ("arg-unknown-option", lambda b: (b.sft("--stepz", "3"), "unrecognized arguments: --stepz")),
    ("arg-unknown-command", lambda b: (["frobnicate"], "invalid choice: 'frobnicate'")),
    ("arg-missing-required", lambda b: (["score", "--tasks", b.world.train], "the following arguments are required: --outputs")),
    ("arg-lambda-zero-flag", lambda b: (b.opd("--reward-scale", "0"), "reward_scale (λ) must be a finite number > 0")),
    ("arg-score-k-zero", lambda b: (["score", "--tasks", b.world.train, "--outputs", b.outputs_ok(), "--k", "0"],
                                    "argument --k: expected an integer ≥ 1, got '0'")),
    ("arg-lambda-star-p", lambda b: (["lambda-star", "--p", "1.5", "--c", "2"], "p")),
    ("arg-lambda-star-c", lambda b: (["lambda-star", "--p", "0.9", "--c", "0.5"], "c")),
    ("arg-simulate-grid", lambda b: (["simulate", "--lambdas", "2:1:0.1"], "argument --lambdas: expected start:stop:step")),
    ("arg-calibrate-c", lambda b: (["calibrate", "--teacher", b.world.teacher, "--warm-start", b.world.student,
                                    "--tasks", b.world.val, "--c", "1", "--out", str(b.out)], "c")),
    ("arg-calibrate-sources", lambda b: (["calibrate", "--teacher", b.world.teacher, "--warm-start", b.world.student,
                                          "--tasks", b.world.val, "--c", "3", "--sources", "oracle",
                                          "--out", str(b.out)], "--sources must name reference and/or teacher")),
    ("arg-data-synth-k", lambda b: (["data", "synth", "--out", str(b.out), "--k", "x"], "argument --k: expected an integer ≥ 2, got 'x'")),
    ("arg-report-no-folder", lambda b: (["report", str(b.dir / "nosweep"), "--out", str(b.out)],
                                        "sweep folder not found")),
    # ------------------------------------------------------------------ model folders
    ("model-missing-folder", lambda b: (b.opd(student=str(b.dir / "no_model")), "no such directory")),
    ("model-empty-folder", lambda b: (b.sft(model=str(b.model_dir("m", config=False, weights=False, tokenizer=False))),
                                      "no config.json")),
    ("model-no-weights", lambda b: (b.sft(model=str(b.model_dir("m", weights=False))), "no weights in this directory")),
    ("model-no-tokenizer", lambda b: (b.opd(student=str(b.model_dir("m", tokenizer=False))), "no tokenizer")),
    ("model-corrupt-config", lambda b: (b.sft(model=str(_corrupt(b.model_dir("m"), "config.json", b"{oops"))),
                                        "cannot read config.json")),
    ("model-corrupt-weights", lambda b: (b.sft(model=str(_corrupt(b.model_dir("m"), "model.safetensors", b"\0" * 64))),
                                         "cannot load the weights")),
    ("model-truncated-weights", lambda b: (b.sft(model=str(_truncate(b.model_dir("m"), "model.safetensors"))),
                                           "cannot load the weights")),
    ("model-shape-mismatch", lambda b: (b.sft(model=str(_edit_config(b.model_dir("m"), intermediate_size=40))),
                                        "cannot load the weights: tensor shapes do not match config.json")),
    ("model-non-causal", lambda b: (b.sft(model=str(_non_causal(b))), "not a causal language model")),
    ("model-vocab-mismatch", lambda b: (b.opd(teacher=b.world.other_teacher), "tokenizers differ")),
    ("model-preset-unknown", lambda b: (b.sft(model="huge-student"), "huge-student")),
    # ------------------------------------------------------------------ calibration files
    ("cal-missing-p", lambda b: (b.opd("--reward-scale", "1.1", "--calibration",
                                       b.calibration({k: v for k, v in CAL_OK.items() if k != "p"})),
                                 "calibration.json: field 'p'")),
    ("cal-p-string", lambda b: (b.opd("--reward-scale", "1.1", "--calibration", b.calibration({**CAL_OK, "p": "0.99"})),
                                "calibration.json: field 'p'")),
    ("cal-wrong-version", lambda b: (b.opd("--reward-scale", "1.1", "--calibration", b.calibration({**CAL_OK, "version": 2})),
                                     "calibration.json: field 'version'")),
    ("cal-no-version", lambda b: (b.opd("--reward-scale", "1.1", "--calibration",
                                        b.calibration({k: v for k, v in CAL_OK.items() if k != "version"})),
                                  "calibration.json: field 'version'")),
    ("cal-not-json", lambda b: (b.opd("--reward-scale", "1.1", "--calibration", b.calibration("{p: 0.9")),
                                "calibration.json: not a calibration file")),
    ("cal-p-out-of-range", lambda b: (b.opd("--reward-scale", "1.1", "--calibration", b.calibration({**CAL_OK, "p": 1.5})),
                                      "calibration.json")),
    ("cal-missing-file", lambda b: (b.opd("--reward-scale", "1.1", "--calibration", str(b.dir / "none.json")),
                                    "none.json: calibration file not found")),
    ("cal-prereg-wrong-version",
     lambda b: (["prereg", "lock", _sweep_with_calibration(b, {**CAL_OK, "version": 7})],
                "calibration.json: field 'version'")),
    # ------------------------------------------------------------------ prediction (outputs) files, via score
    ("out-not-json", lambda b: (b.score(b.world.train, b.tasks(["{oops"], name="outs.jsonl")), "outs.jsonl:1: not JSON")),
    ("out-missing-output", lambda b: (b.score(b.world.train, b.tasks([{"id": b.good_record()["id"]}], name="outs.jsonl")),
                                      "outs.jsonl:1: field 'output': missing")),
    ("out-output-not-string", lambda b: (b.score(b.world.train, b.tasks([{"id": b.good_record()["id"], "output": 3}],
                                                                         name="outs.jsonl")),
                                         "outs.jsonl:1: field 'output': must be a string")),
    ("out-unknown-task", lambda b: (b.score(b.world.train, b.tasks([{"id": "nope", "output": ""}], name="outs.jsonl")),
                                    "outs.jsonl:1: field 'id': no task has id 'nope'")),
    ("out-duplicate", lambda b: (b.score(b.world.train, b.tasks([{"id": b.good_record()["id"], "output": ""}] * 2,
                                                                 name="outs.jsonl")),
                                 "outs.jsonl:2: field 'id': second output")),
    ("out-incomplete", lambda b: (b.score(b.world.train, b.tasks([{"id": b.good_record()["id"], "output": ""}],
                                                                  name="outs.jsonl")),
                                  "outs.jsonl: no output for")),
    # ------------------------------------------------------------------ prereg.json
    ("prereg-missing", lambda b: (["prereg", "check", b.sweep(lock=False)], "prereg.json is missing")),
    ("prereg-tampered", lambda b: (_prereg_case(b, lambda d: d.update(locked_at="2000-01-01T00:00:00+00:00"), False),
                                   "prereg.json was modified after locking")),
    ("prereg-wrong-version", lambda b: (_prereg_case(b, lambda d: d.update(version=99), True),
                                        "prereg.json: field 'version'")),
    ("prereg-not-json", lambda b: (["prereg", "check", _write_then(b.sweep(lock=True), b.dir / "sweep" / "prereg.json", "{x")],
                                   "prereg.json: unreadable JSON")),
]


def _relevance_literal(b: Bench, literal: str) -> str:
    """The good record with the first candidate's grade replaced by a raw JSON literal."""
    r = b.good_record()
    first = r["candidates"][0]["id"]
    r["relevance"][first] = "@@"
    return json.dumps(r).replace('"@@"', literal)


def _corrupt_gzip(b: Bench) -> str:
    data = gzip.compress((json.dumps(b.record()) + "\n").encode() * 50)
    path = b.dir / "bad.jsonl.gz"
    path.write_bytes(data[:len(data) // 2])
    return str(path)


def _bad_deflate(b: Bench) -> str:
    """A gzip header followed by a stored block with inconsistent lengths (zlib.error, not OSError)."""
    import base64

    path = b.dir / "bad.jsonl.gz"
    path.write_bytes(base64.b64decode("H4sIH4sAMPt6LAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
    return str(path)


def _mixed_k(b: Bench) -> str:
    r = b.record(id="other")
    drop = r["candidates"].pop()["id"]
    del r["relevance"][drop]
    return b.tasks([b.record(), r])


def _corrupt(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder


def _truncate(folder: Path, name: str) -> Path:
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[:len(data) // 2])
    return folder


def _edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _non_causal(b: Bench) -> Path:
    folder = b.model_dir("bert", weights=False)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 100, "hidden_size": 8,
                                                    "num_hidden_layers": 1, "num_attention_heads": 1,
                                                    "intermediate_size": 8}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def _sweep_with_calibration(b: Bench, cal: dict) -> str:
    path = b.sweep(lock=False)
    b.calibration(cal)
    return path


def _write_then(value, path: Path, text: str):
    path.write_text(text)
    return value


def snapshot(folder: Path) -> dict[str, str]:
    """path -> sha256 of every file under `folder` (what a refusal must leave unchanged)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _setup(case, tmp_path, world):
    b = Bench(tmp_path, world)
    argv, expected = case(b)
    return b, argv, expected


def check_refusal(rc: int, err: str, expected: str, b: Bench, before: dict, case_id: str) -> None:
    lines = err.splitlines()
    assert rc == 2, f"{case_id}: exit code {rc}, stderr {err!r}"
    assert "Traceback" not in err, f"{case_id}: traceback\n{err}"
    assert len(lines) == 1 and err.endswith("\n"), f"{case_id}: expected one line on stderr, got {lines!r}"
    assert expected in lines[0], f"{case_id}: {expected!r} not in {lines[0]!r}"
    assert lines[0].startswith("listopd"), lines[0]
    assert not b.out.exists(), f"{case_id}: {b.out} was created"
    after = snapshot(b.dir)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"{case_id}: files changed or left behind: {changed}"


@pytest.mark.parametrize("case_id,case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_in_process(case_id, case, tmp_path, world, capsys):
    b, argv, expected = _setup(case, tmp_path, world)
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code
    check_refusal(rc, capsys.readouterr().err, expected, b, before, case_id)


def test_the_corpus_is_large_and_distinct():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


# One case per kind of input, through a real `python -m listopd` process (real stderr: warnings and
# tracebacks would show here).
SUBPROCESS_CASES = ["task-non-utf8", "task-huge-line", "cfg-c-one", "arg-not-int", "model-non-causal",
                    "model-shape-mismatch", "model-vocab-mismatch", "cal-wrong-version", "prereg-tampered", "out-duplicate"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_subprocess(case_id, tmp_path, world):
    case = dict(CASES)[case_id]
    b, argv, expected = _setup(case, tmp_path, world)
    before = snapshot(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-m", "listopd", *argv], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    check_refusal(proc.returncode, proc.stderr, expected, b, before, case_id)
    assert proc.stdout == ""
