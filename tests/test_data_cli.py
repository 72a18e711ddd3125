"""`listopd data synth | stats | amazon` end to end through the CLI."""

import json

from listopd.cli import main


def test_data_synth_then_stats(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["data", "synth", "--out", str(out), "--seed", "3", "--n-users", "50", "--n-items", "200", "--k", "6"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train 40, validation 5, test 5" in printed
    for split, n in (("train", 40), ("validation", 5), ("test", 5)):
        lines = (out / f"{split}.jsonl").read_text().splitlines()
        assert len(lines) == n
        first = json.loads(lines[0])
        assert first["split"] == split and [c["id"] for c in first["candidates"]] == list("ABCDEF")
    assert json.loads((out / "stats.json").read_text())["tasks"] == {"train": 40, "validation": 5, "test": 5}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    rc = main(["data", "stats", str(out / "train.jsonl"), str(out / "test.jsonl"), "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["tasks"] == 45 and s["splits"] == {"train": 40, "test": 5} and s["k"] == {"6": 45}
    assert set(s["relevance"]) <= {"0", "1", "2", "3"} and sum(s["relevance"].values()) == 45 * 6
    assert sum(s["top_position"].values()) + s["top_ties"] + s["all_equal_relevance"] == 45
    assert s["context_chars"]["p0"] <= s["context_chars"]["p50"] <= s["context_chars"]["p100"]
    assert s["problems"] == 0

    rc = main(["data", "stats", str(out / "validation.jsonl")])
    text = capsys.readouterr().out
    assert rc == 0 and "tasks: 5 (validation 5)" in text and "K: 6 5" in text


def test_data_stats_reports_bad_lines(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path), "--n-users", "10", "--n-items", "100"])
    capsys.readouterr()
    path = tmp_path / "train.jsonl"
    path.write_text(path.read_text() + "{broken\n")
    rc = main(["data", "stats", str(path)])
    out = capsys.readouterr().out
    assert rc == 1 and "tasks: 8 (train 8)" in out and "problems: 1" in out


def test_data_synth_empty_split_gets_no_file(tmp_path, capsys):
    rc = main(["data", "synth", "--out", str(tmp_path), "--n-users", "20", "--n-items", "100",
               "--validation-frac", "0", "--test-frac", "0"])
    assert rc == 0 and "no tasks, no file: validation, test" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json", "train.jsonl"]


def test_data_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "amazon", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "either a subset folder" in err
    assert main(["data", "stats", str(tmp_path / "missing.jsonl")]) == 2


def test_data_amazon_subset(amazon_subset_dir, tmp_path, capsys):
    rc = main(["data", "amazon", "--subset", str(amazon_subset_dir), "--out", str(tmp_path),
               "--min-user-interactions", "3", "--seed", "1"])
    assert rc == 0
    assert "train 16, validation 16, test 16" in capsys.readouterr().out
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["users"] == 914 and stats["users_with_at_least"]["3"] == 16 and stats["seed"] == 1
    assert len((tmp_path / "test.jsonl").read_text().splitlines()) == 16
