"""Coverage-guided fuzzing (atheris / libFuzzer) of the output contract and the task-file reader.

atheris is not a dependency of listopd; install it beside the project, e.g. without touching the venv:

    .venv/bin/python -m pip install --target /tmp/atheris_lib atheris
    PYTHONPATH=/tmp/atheris_lib .venv/bin/python scripts/fuzz_contract.py -runs=200000 -max_len=512
    PYTHONPATH=/tmp/atheris_lib .venv/bin/python scripts/fuzz_contract.py -max_total_time=600 corpus_dir/

(any libFuzzer flag works; a crash writes crash-<sha1> with the input, re-run it by passing that file).

Properties checked on every input (any exception, or a failed assert, is a finding):
- contract: for a random candidate id set and text, `judge` returns a Verdict of a known kind and never
  raises; `judge(t).ok == start().feed(t).accepting` and `is_viable_prefix(t) == (start().feed(t) is not
  None)` (the judge and the incremental automaton agree, as contract.py promises); an ok text is JSON
  `{"ranking": [...]}` holding a permutation of the ids; `repair` returns None or a permutation of the ids.
- task reader: the same bytes as a task file make `read_tasks` return tasks or raise InputError, nothing else.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from listopd.task.contract import Kind, RankingContract
    from listopd.util.errors import InputError
    from listopd.task.tasks import read_tasks

ID_SETS = (("A", "B", "C"), ("A", "AB", "B"), ("1", "2", "3", "4", "5", "6", "7", "8"), ("é", "x\u2028", "Z"),
           ("id-1",))
CONTRACTS = [RankingContract(ids) for ids in ID_SETS]
TASK_FILE = os.path.join(tempfile.mkdtemp(prefix="fuzz_contract_"), "tasks.jsonl")


def check_contract(contract: RankingContract, text: str) -> None:
    verdict = contract.check(text)
    assert isinstance(verdict.kind, Kind)
    state = contract.start().feed(text)
    assert verdict.ok == (state is not None and state.accepting), (text, verdict)
    assert contract.is_viable_prefix(text) == (state is not None), (text, verdict)
    ids = set(contract.ids)
    if verdict.ok:
        obj = json.loads(text)
        assert list(obj) == ["ranking"] and sorted(obj["ranking"]) == sorted(ids), (text, obj)
        assert list(verdict.ranking) == obj["ranking"]
    repaired = contract.repair(text)
    assert repaired is None or (len(repaired) == len(ids) and set(repaired) == ids), (text, repaired)


def check_task_reader(data: bytes) -> None:
    with open(TASK_FILE, "wb") as f:
        f.write(data)
    try:
        read_tasks(TASK_FILE, allow_mixed_k=True)
    except InputError:
        pass


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    contract = CONTRACTS[fdp.ConsumeIntInRange(0, len(CONTRACTS) - 1)]
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    check_contract(contract, text)
    check_task_reader(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
