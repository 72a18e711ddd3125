"""`listopd score` end to end: table, --json, and one-line errors with exit code 2."""

import json

import pytest

from listopd.cli import main
from listopd.task.prompts import target_text
from listopd.task.tasks import Candidate, Task, write_tasks


def _tasks(n=20):
    out = []
    for i in range(n):
        ids = "ABCD"
        rel = {x: (2 if j == i % 4 else (1 if j == (i + 1) % 4 else 0)) for j, x in enumerate(ids)}
        out.append(Task(id=f"t{i}", context=f"user {i}", candidates=tuple(Candidate(x, f"item {x}") for x in ids),
                        relevance=rel, split="test"))
    return out


def _files(tmp_path, outputs_for):
    tasks = _tasks()
    tpath = tmp_path / "tasks.jsonl.gz"
    write_tasks(tpath, tasks)
    opath = tmp_path / "outputs.jsonl"
    opath.write_text("".join(json.dumps({"id": t.id, "output": outputs_for(i, t)}) + "\n"
                             for i, t in enumerate(tasks)))
    return str(tpath), str(opath)


def _output(i, t):
    # half the outputs are the reference (valid), a quarter truncated, a quarter prose
    if i % 2 == 0:
        return target_text(t)
    return target_text(t)[:15] if i % 4 == 1 else "I think D is best, then A."


def test_score_json(tmp_path, capsys):
    tpath, opath = _files(tmp_path, _output)
    assert main(["score", "--tasks", tpath, "--outputs", opath, "--json", "--k", "2", "--n-boot", "200"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 20 and r["n_parsed"] == 10 and r["k"] == 2
    assert r["strict_parse_rate"] == 0.5
    assert r["failure_kinds"]["ok"] == 10 and r["failure_kinds"]["truncated"] == 5
    assert r["failure_kinds"]["not_json"] == 5
    assert r["ndcg@1_parsed"] == 1.0 and r["ndcg@1_strict"] == 0.5  # the reference ranks perfectly
    lo, hi = r["ndcg@1_strict_ci"]
    assert lo <= 0.5 <= hi
    for name in ("ndcg@1_parsed", "ndcg@2_repaired", "recall@2_strict", "mrr_repaired", "strict_parse_rate"):
        assert name in r and name + "_ci" in r


def test_score_table(tmp_path, capsys):
    tpath, opath = _files(tmp_path, _output)
    assert main(["score", "--tasks", tpath, "--outputs", opath, "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    assert "strict parse rate   0.500" in out and "ndcg@1" in out and "recall@5" in out
    assert "kinds: ok 10, truncated 5, not_json 5" in out


def test_bad_outputs_file_exits_2_with_one_line(tmp_path, capsys):
    tpath, opath = _files(tmp_path, _output)
    with open(opath, "a") as f:
        f.write(json.dumps({"id": "t99", "output": "x"}) + "\n")
    assert main(["score", "--tasks", tpath, "--outputs", opath]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err == f"listopd score: error: {opath}:21: field 'id': no task has id 't99'\n"


def test_missing_output_and_bad_arguments(tmp_path, capsys):
    tpath, opath = _files(tmp_path, _output)
    lines = open(opath).read().splitlines()
    with open(opath, "w") as f:
        f.write("\n".join(lines[:-1]) + "\n")
    assert main(["score", "--tasks", tpath, "--outputs", opath]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no output for 1 of 20 tasks ('t19')" in err
    assert main(["score", "--tasks", str(tmp_path / "none.jsonl"), "--outputs", opath]) == 2
    assert "file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["score", "--tasks", tpath, "--outputs", opath, "--k", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
