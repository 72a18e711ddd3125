"""A task whose prompt does not fit the model's context is refused before any work starts, naming the task,
its length and the limit (issue: a 200 kB candidate text became a ~10⁵-token prompt in sft, opd, calibrate,
constrained and demo; only serve compared lengths). Nothing is truncated, nothing is written."""

from __future__ import annotations

import dataclasses
import os

import pytest
from tiny_world import opd_config, sft_config

from listopd.task.tasks import Candidate, read_tasks, write_tasks
from listopd.util.errors import InputError

CONTEXT = 1024  # the tiny presets' max_position_embeddings


def _with_one_long_task(world, folder):
    """The world's training tasks with task 3's first candidate text replaced by ~200 kB of text."""
    tasks = read_tasks(world.train)
    long = tasks[2]
    words = " ".join(["linen"] * 40_000)  # 240 kB, accepted by the reader (lines up to 1 MiB)
    long = dataclasses.replace(long, candidates=(Candidate(long.candidates[0].id, words), *long.candidates[1:]))
    tasks[2] = long
    folder.mkdir()
    path = folder / "long.jsonl"
    write_tasks(path, tasks)
    return str(path), long.id


def _check(e, path, task_id):
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path) and f"task 3 (id {task_id!r})" in msg
    assert f"context of {CONTEXT} tokens" in msg
    n = int(msg.split("is ")[1].split(" tokens")[0])
    assert n > 30_000  # the length is the real one, not a cut


def test_sft_refuses_before_writing(world, tmp_path):
    from listopd.train.sft import run_sft

    path, tid = _with_one_long_task(world, tmp_path / "data")
    with pytest.raises(InputError) as e:
        run_sft(sft_config(world, tmp_path / "run", tasks=path))
    _check(e, path, tid)
    assert "prompt + target" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_opd_refuses_long_training_and_validation_prompts(world, tmp_path):
    from listopd.train.opd import run_opd

    path, tid = _with_one_long_task(world, tmp_path / "data")
    with pytest.raises(InputError) as e:
        run_opd(opd_config(world, tmp_path / "run", tasks=path))
    _check(e, path, tid)
    assert "+ 8 new tokens" in str(e.value)  # the completion must fit too
    with pytest.raises(InputError) as e:
        run_opd(opd_config(world, tmp_path / "run", val_tasks=path, eval_tasks=10))
    _check(e, path, tid)
    assert not (tmp_path / "run").exists()


def test_calibrate_and_constrained_refuse(world, tmp_path, capsys):
    from listopd.cli import main

    path, tid = _with_one_long_task(world, tmp_path / "data")
    out = tmp_path / "cal"
    assert main(["calibrate", "--teacher", world.teacher, "--warm-start", world.student, "--tasks", path,
                 "--c", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"id {tid!r}" in err and f"context of {CONTEXT}" in err
    assert not out.exists()
    assert main(["constrained", world.student, "--tasks", path, "--decodings", "unconstrained",
                 "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"id {tid!r}" in err
    assert not os.path.exists(tmp_path / "c.json")


def test_tasks_that_fit_are_not_refused(world):
    from listopd.task.prompts import refuse_long_prompts

    tasks = read_tasks(world.train)
    refuse_long_prompts(tasks, [CONTEXT - 8] * len(tasks), CONTEXT, source="x", room=8)  # exactly full: fits
    with pytest.raises(InputError, match="task 1 .* 1017 tokens \\+ 8 new tokens"):
        refuse_long_prompts(tasks, [CONTEXT - 7] * len(tasks), CONTEXT, source="x", room=8)
    refuse_long_prompts(tasks, [10**6] * len(tasks), None, source="x")  # no stated context: nothing to check
