"""scripts/stop_check_decode_steps.py: where a sampled row stops mattering — its EOS, its first prefix that no
valid output can continue, or its last token."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from listopd.task.contract import RankingContract

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("stop_check", ROOT / "scripts" / "stop_check_decode_steps.py")
stop_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stop_check)


def test_a_row_stops_at_its_eos_at_its_first_dead_prefix_or_at_its_end(world):
    tok, contract = world.tok, RankingContract(["A", "B", "C"])
    valid = tok.encode('{"ranking": ["A", "B", "C"]}', add_special_tokens=False)
    assert stop_check.stop_step(valid + [tok.eos_token_id, tok.eos_token_id], contract, tok) == len(valid) + 1
    assert stop_check.stop_step(valid, contract, tok) == len(valid)  # no EOS: every prefix viable, so its end
    dead = tok.encode('{"ranking": ["A", "A"', add_special_tokens=False)
    n = stop_check.stop_step(dead + valid, contract, tok)  # dies inside the repeated id, before `valid` is appended
    assert n <= len(dead)
    assert contract.is_viable_prefix(tok.decode(dead[:n - 1]))
    assert not contract.is_viable_prefix(tok.decode(dead[:n]))
    prose = tok.encode("Sure, here", add_special_tokens=False)
    assert stop_check.stop_step(prose, contract, tok) == 1
