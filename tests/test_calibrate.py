"""Calibration recovers hand-set p, b and λ* from synthetic "models" whose next-token distributions put a
chosen mass on the contract-keeping class at every position."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from listopd.core import theory
from listopd.experiment.calibrate import calibrate, failure_role
from listopd.task.roles import VocabularyText, char_roles, token_role, walk_output
from listopd.task.contract import RankingContract
from listopd.task.data.synth import make_synth_tasks
from listopd.task.prompts import encode_prompt, target_text
from listopd.task.tokenizer import task_texts, train_tokenizer


@pytest.fixture(scope="module")
def setup():
    tasks = make_synth_tasks(n_items=60, n_users=12, k=4, history_len=2, min_history=1, seed=3)[:6]
    tok = train_tokenizer(task_texts(tasks), vocab_size=400)
    return tasks, tok


class HandSetLM(torch.nn.Module):
    """Puts `mass(role)` on the keeping class at every output position of the given tasks, spread evenly,
    and the rest evenly on the other tokens. It finds the output part by the known prompts."""

    def __init__(self, tok, tasks, mass_by_role, default_mass):
        super().__init__()
        self.tok, self.vocab = tok, VocabularyText.from_tokenizer(tok)
        self.prompts = {tuple(encode_prompt(t, tok)): RankingContract.for_task(t) for t in tasks}
        self.mass_by_role, self.default = mass_by_role, default_mass
        self.head = torch.nn.Linear(1, len(tok), bias=False)

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, logits_to_keep, **_):
        ids = input_ids[0].tolist()
        prompt = next(p for p in self.prompts if tuple(ids[:len(p)]) == p)
        contract = self.prompts[prompt]
        out_ids = ids[len(prompt):]
        rows = []
        for j in range(len(out_ids) + 1):  # the distribution after j output tokens
            text = self.tok.decode(out_ids[:j], skip_special_tokens=True)
            state = contract.start().feed(text)
            keep = self.vocab.keeping_mask(state)
            full = text + self.tok.decode([out_ids[j]]) if j < len(out_ids) else text
            role = "eos" if state.accepting else token_role(char_roles(full)[len(text):len(full)] or [("eos", None)])[0]
            m = self.mass_by_role.get(role, self.default)
            probs = np.where(keep, m / keep.sum(), (1 - m) / (~keep).sum())
            rows.append(np.log(probs))
        logits = torch.tensor(np.array(rows[-logits_to_keep:]))[None]
        return SimpleNamespace(logits=logits)


def test_char_roles_label_the_canonical_output():
    text = '{"ranking": ["C", "A"]}'
    roles = [r for r, _ in char_roles(text)]
    assert roles[0] == "open_brace" and roles[1] == "quote" and roles[2] == "key" and roles[9] == "quote"
    assert roles[10] == "colon" and roles[11] == "whitespace" and roles[12] == "open_bracket"
    assert [k for _, k in char_roles(text)][14] == 1 and [k for _, k in char_roles(text)][19] == 2
    assert roles[-2:] == ["close_bracket", "close_brace"]
    assert token_role(char_roles(text)[16:19]) == ("separator+quote", None)  # ', "'
    assert token_role(char_roles(text)[11:12]) == ("whitespace", None)


def test_walk_keeping_classes(setup):
    tasks, tok = setup
    task = tasks[0]
    contract = RankingContract.for_task(task)
    vocab = VocabularyText.from_tokenizer(tok)
    out_ids = tok.encode(target_text(task), add_special_tokens=False) + [tok.eos_token_id]
    steps = walk_output(contract, vocab, tok, out_ids)
    assert len(steps) == len(out_ids)
    for (mask, role, rank), tok_id in zip(steps, out_ids):
        assert mask[tok_id], "the reference token itself always keeps the contract"
    id_steps = [(mask, rank) for mask, role, rank in steps if role == "id"]
    # K = 4 ids: the class of single-letter id tokens shrinks 4, 3, 2, 1 (multi-letter tokens aside)
    letters = [tok.convert_tokens_to_ids(c) for c in task.candidate_ids]
    assert [int(mask[letters].sum()) for mask, _ in id_steps] == [4, 3, 2, 1]
    assert [rank for _, rank in id_steps] == [1, 2, 3, 4]
    eos_mask = steps[-1][0]
    assert eos_mask[tok.eos_token_id] and eos_mask.sum() >= 1
    assert not steps[0][0][tok.eos_token_id]  # EOS never keeps the contract before the output is complete


def test_calibration_recovers_hand_set_masses(setup):
    tasks, tok = setup
    c = 5.0
    teacher = HandSetLM(tok, tasks, {"id": 0.999}, default_mass=0.99999)
    warm = HandSetLM(tok, tasks, {"id": 0.9}, default_mass=0.999)
    cal = calibrate(teacher, warm, tok, tasks, c=c, sources=("reference",), n_boot=50)
    ids = [p for p in cal.positions if p.role == "id"]
    assert ids and all(p.p == pytest.approx(0.999, abs=1e-9) and p.b == pytest.approx(0.9, abs=1e-9) for p in ids)
    s = cal.summary()
    # the id role has the smallest λ*: it binds, and the prediction is λ*(0.999, 0.9, 5)
    assert s["binding_role"] == "id"
    assert s["p"] == pytest.approx(0.999, abs=1e-9) and s["b"] == pytest.approx(0.9, abs=1e-9)
    assert s["lambda_star"] == pytest.approx(theory.lambda_star(0.999, 0.9, c), rel=1e-6)
    assert s["lambda_star_base_neutral"] == pytest.approx(theory.lambda_star_base_neutral(0.999, c), rel=1e-6)
    lo, hi = s["lambda_star_ci"]
    assert lo == pytest.approx(s["lambda_star"], rel=1e-6) and hi == pytest.approx(s["lambda_star"], rel=1e-6)
    other = s["roles"]["open_brace"]
    assert other["p"] == pytest.approx(0.99999, abs=1e-9) and other["b"] == pytest.approx(0.999, abs=1e-9)


def test_mean_tail_aggregation_and_bootstrap(setup):
    """Per-task masses that differ: p_role = 1 − mean tail, and the bootstrap interval brackets it."""
    tasks, tok = setup
    teacher = HandSetLM(tok, tasks, {}, default_mass=0.999)
    warm = HandSetLM(tok, tasks, {}, default_mass=0.95)
    cal = calibrate(teacher, warm, tok, tasks, c=3.0, sources=("reference",), n_boot=200)
    # make the tail differ by task: scale task i's tails by (i + 1)
    for pos in cal.positions:
        i = [t.id for t in tasks].index(pos.task)
        pos.p, pos.b = 1 - (1 - pos.p) * (i + 1), 1 - (1 - pos.b) * (i + 1) / 2
    s = cal.summary()
    role = s["binding_role"]
    tails = [1 - p.p for p in cal.positions if p.role == role]
    assert s["p"] == pytest.approx(1 - np.mean(tails), rel=1e-12)
    lo, hi = s["lambda_star_ci"]
    assert lo < s["lambda_star"] < hi


def test_failure_roles_name_the_broken_entry():
    contract = RankingContract(["A", "B", "C"])
    assert failure_role(contract, '{"ranking": ["A", "B", "C"]}') == "ok"
    assert failure_role(contract, '{"ranking": ["A", "A", "C"]}') == "duplicate_id@id_2"
    # the list closed where the 3rd entry was due
    assert failure_role(contract, '{"ranking": ["A", "B"]}') == "missing_id@id_3"
    assert failure_role(contract, '{"ranking": ["A", "B", "C"') == "truncated"
    assert failure_role(contract, 'sure! {"ranking"') == "not_json"


def test_calibrate_cli_writes_the_file_the_trainer_reads(world, tmp_path, capsys):
    """`listopd calibrate` on two real tiny models: table, calibration.json with p and b, a PNG; bad c → exit 2."""
    from listopd.cli import main
    from listopd.train.opd_config import OPDConfig

    out = tmp_path / "cal"
    code = main(["calibrate", "--teacher", world.teacher, "--warm-start", world.student, "--tasks", world.val,
                 "--c", "5", "--n-boot", "50", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "role" in printed and "positions" in printed
    data = json.loads((out / "calibration.json").read_text())
    assert data["version"] == 1 and data["c"] == 5.0 and data["n_tasks"] == len(world.val_tasks)
    assert (out / "calibration.png").stat().st_size > 5_000
    if data["binding_role"] is not None:  # the OPD config reads p and b from it
        cfg = OPDConfig(student=world.student, teacher=world.teacher, tasks=world.train, out=str(tmp_path / "o"),
                        calibration=str(out / "calibration.json"))
        assert cfg.cliff_pb() == (data["p"], data["b"])
    assert main(["calibrate", "--teacher", world.teacher, "--warm-start", world.student, "--tasks", world.val,
                 "--c", "1"]) == 2
