"""The output contract: strict judge, exact prefix automaton, repair; and the prompt/target that feed it."""

import json
import random
import time
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listopd.task.contract import KINDS, Kind, RankingContract, canonical_json
from listopd.task.prompts import PLAIN_TEMPLATE, SYSTEM, reference_ranking, render_messages, render_prompt, target_text
from listopd.task.tasks import Candidate, Task

ABC = RankingContract(["A", "B", "C"])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle_ok(text: str, ids, key="ranking") -> bool:
    """Independent definition of 'valid' via json.loads (a repeated key is a second member)."""
    def pairs(kv):
        keys = [k for k, _ in kv]
        if len(keys) != len(set(keys)):
            raise ValueError("repeated key")
        return dict(kv)
    try:
        v = json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return False
    return (isinstance(v, dict) and list(v) == [key] and isinstance(v[key], list)
            and all(isinstance(x, str) for x in v[key])
            and len(v[key]) == len(ids) and set(v[key]) == set(ids))


# --------------------------------------------------------------------------------- hand-written verdicts

@pytest.mark.parametrize("text, kind", [
    ('{"ranking": ["B", "A", "C"]}', Kind.OK),
    (' \n\t{ "ranking" :[ "C" ,"B","A" ] }\r\n ', Kind.OK),
    ('{"ranking":["\\u0041","B","C"]}', Kind.OK),          # "\u0041" is "A": JSON semantics
    ('{"r\\u0061nking":["A","B","C"]}', Kind.OK),          # escapes in the key too
    ("", Kind.TRUNCATED),
    ("   ", Kind.TRUNCATED),
    ('{"ranking": ["B", "A"', Kind.TRUNCATED),
    ('{"ranking": ["B", "A", "C"]', Kind.TRUNCATED),
    ('{"rank', Kind.TRUNCATED),
    ('{"ranking": ["\\u00', Kind.TRUNCATED),
    ("Sure! Here it is", Kind.NOT_JSON),
    ('```json\n{"ranking": ["B", "A", "C"]}\n```', Kind.NOT_JSON),
    ('{ranking: ["A", "B", "C"]}', Kind.NOT_JSON),
    ('{"ranking": [A, B, C]}', Kind.NOT_JSON),
    ('{"ranking": ["A", "B", "C",]}', Kind.NOT_JSON),        # trailing comma
    ('{"ranking": ["A" "B", "C"]}', Kind.NOT_JSON),          # missing comma
    ('{"ranking": ["A\nB"]}', Kind.NOT_JSON),                # raw control character in a string
    ('{"ranking": ["\\x41", "B", "C"]}', Kind.NOT_JSON),     # not a JSON escape
    ('["A", "B", "C"]', Kind.WRONG_SHAPE),                   # a list, not an object
    ("{}", Kind.WRONG_SHAPE),
    ('{"order": ["A", "B", "C"]}', Kind.WRONG_SHAPE),
    ('{"Ranking": ["A", "B", "C"]}', Kind.WRONG_SHAPE),
    ('{"ranking": "A, B, C"}', Kind.WRONG_SHAPE),
    ('{"ranking": [1, 2, 3]}', Kind.WRONG_SHAPE),
    ('{"ranking": [["A"], "B", "C"]}', Kind.WRONG_SHAPE),
    ('{"ranking": ["A", "B", "C"], "why": "x"}', Kind.WRONG_SHAPE),
    ('{"ranking": ["A", "B", "C"], "ranking": ["A", "B", "C"]}', Kind.WRONG_SHAPE),
    ('{"ranking": ["A", "B", "C",', Kind.WRONG_SHAPE),      # a 4th entry must follow
    ('{"ranking": ["A", "D", "C"]}', Kind.UNKNOWN_ID),
    ('{"ranking": ["A", "a", "C"]}', Kind.UNKNOWN_ID),       # ids are case-sensitive
    ('{"ranking": ["A", "B", "C", "D"]}', Kind.UNKNOWN_ID),
    ('{"ranking": ["A", "AB", "C"]}', Kind.UNKNOWN_ID),
    ('{"ranking": ["A", "A", "C"]}', Kind.DUPLICATE_ID),
    ('{"ranking": ["A", "\\u0041"', Kind.DUPLICATE_ID),
    ('{"ranking": ["A", "B", "C", "A"]}', Kind.DUPLICATE_ID),
    ('{"ranking": ["A", "B"]}', Kind.MISSING_ID),
    ('{"ranking": []}', Kind.MISSING_ID),
    ('{"ranking": ["A", "B", "C"]} ok', Kind.TRAILING_TEXT),
    ('{"ranking": ["A", "B", "C"]}<|endoftext|>', Kind.TRAILING_TEXT),  # EOS text is trailing text
    ('{"ranking": ["A", "B", "C"]}}', Kind.TRAILING_TEXT),
])
def test_judge_hand_cases(text, kind):
    v = ABC.check(text)
    assert v.kind is kind, (text, v)
    assert v.ok == (kind is Kind.OK)
    assert (v.ranking is not None) == v.ok
    assert ABC.is_viable_prefix(text) == (kind in (Kind.OK, Kind.TRUNCATED))
    assert oracle_ok(text, ABC.ids) == v.ok
    if kind not in (Kind.OK, Kind.TRUNCATED):
        assert v.position is not None and not ABC.is_viable_prefix(text[: v.position + 1])
        assert ABC.is_viable_prefix(text[: v.position])  # the position is the first fatal character


def test_ok_verdict_carries_the_ranking():
    v = ABC.check(' {"ranking": ["C", "\\u0041", "B"]} ')
    assert v.ok and v.ranking == ("C", "A", "B") and str(v) == "ok"


def test_ids_that_prefix_each_other_and_non_ascii():
    c = RankingContract(["A", "AB", "é", "😀x"])
    text = '{"ranking": ["AB", "\\u00e9", "\\ud83d\\ude00x", "A"]}'
    assert c.check(text).ranking == ("AB", "é", "😀x", "A")
    assert c.check('{"ranking": ["AB", "é", "😀x", "A"]}').ok  # raw characters too
    assert c.is_viable_prefix('{"ranking": ["A')              # "A" or "AB"
    assert c.is_viable_prefix('{"ranking": ["\\ud83d')         # high surrogate awaiting its pair
    assert c.is_viable_prefix('{"ranking": ["\\ud83d\\ude')
    assert c.is_viable_prefix('{"ranking": ["\\ud83d\\ud')       # DE00 (the low half of U+1F600) still fits
    assert not c.is_viable_prefix('{"ranking": ["\\ud83d\\udd')  # DD00-DDFF: spells no id
    assert c.check('{"ranking": ["\\ud83d", "A"').kind is Kind.UNKNOWN_ID  # lone surrogate
    assert not c.is_viable_prefix('{"ranking": ["\\u00e8')
    assert c.check('{"ranking": ["A", "AB", "A"').kind is Kind.DUPLICATE_ID


def test_custom_key_and_bad_contracts():
    c = RankingContract(["x1", "x2"], key="order")
    assert c.check('{"order": ["x2", "x1"]}').ok
    assert c.check('{"ranking": ["x2", "x1"]}').kind is Kind.WRONG_SHAPE
    for bad in ([], ["A", "A"], ["A", ""], ["A", 3], ["\ud800"]):
        with pytest.raises(ValueError):
            RankingContract(bad)
    with pytest.raises(TypeError):
        ABC.check(None)


def test_canonical_form():
    assert canonical_json(["C", "A", "B"]) == '{"ranking": ["C", "A", "B"]}'
    assert ABC.canonical(["C", "A", "B"]) == '{"ranking": ["C", "A", "B"]}'
    assert canonical_json(["é"]) == '{"ranking": ["é"]}'  # ensure_ascii=False


# ------------------------------------------------------------------------------- incremental automaton

def test_state_feed_is_incremental():
    text = '{"ranking": ["B", "A", "C"]}'
    s = ABC.start()
    for i in range(0, len(text), 3):  # token-sized pieces
        s = s.feed(text[i:i + 3])
        assert s is not None
    assert s.accepting and s.feed("  \n").accepting
    assert s.feed("x") is None
    states = ABC.start().feed_many(["{", "x", ' {"', ""])
    assert [st is not None for st in states] == [True, False, True, True]
    mask = ABC.start().feed('{"ranking": ["A", ').viable_mask(['"B', '"A', ' "C", "B"]}', "]", '"'])
    assert mask.tolist() == [True, False, True, False, True]
    # contracts over the same ids share one automaton (calibration reuses its cached transitions)
    assert RankingContract(["C", "B", "A"]).start() is ABC.start()


def test_viable_mask_speed_50k_strings():
    """Calibration asks this for every vocabulary token at every position; target < 50 ms for 50k."""
    rng = random.Random(0)
    alphabet = 'ABCDEFGHabcdefgh0123456789 "{}[],:\\_.-é'
    vocab = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(50_000)]
    contract = RankingContract(list("ABCDEFGH"))
    state = contract.start().feed('{"ranking": ["C", "A", ')
    state.viable_mask(vocab)  # first call builds the transitions it needs
    best = float("inf")
    for _ in range(3):
        state._mask_cache = None
        t0 = time.perf_counter()
        mask = state.viable_mask(vocab)
        best = min(best, time.perf_counter() - t0)
    assert mask.sum() > 0
    assert best < 0.25, f"{best * 1e3:.1f} ms for 50k strings"  # generous bound for a loaded CI machine


# ------------------------------------------------------------------------------------ property tests

ID_SETS = [["A", "B", "C"], ["A", "AB", "B"], ["é", "x/y", "😀"], ["item1", "item2", "item10", "q"]]
JSONISH = ' \n\t{}[]":,\\/uABCDabcdef0123456789rankigxé😀'


def encode_string(draw, s: str) -> str:
    """A JSON string literal for s, each character raw or escaped (JSON allows both)."""
    out = []
    for ch in s:
        how = draw(st.sampled_from(["raw", "raw", "u", "U"]))
        if ch in '"\\':
            how = draw(st.sampled_from(["short", "u"]))
        if ch == "/" and how == "raw":
            how = draw(st.sampled_from(["raw", "short"]))
        if how == "raw":
            out.append(ch)
        elif how == "short":
            out.append("\\" + ch)
        else:
            units = [ord(ch)] if ord(ch) < 0x10000 else [0xD800 + ((ord(ch) - 0x10000) >> 10),
                                                          0xDC00 + ((ord(ch) - 0x10000) & 0x3FF)]
            hexes = "".join(f"\\u{u:04x}" for u in units)
            out.append(hexes.upper().replace("\\U", "\\u") if how == "U" else hexes)
    return '"' + "".join(out) + '"'


@st.composite
def valid_outputs(draw):
    ids = draw(st.sampled_from(ID_SETS))
    order = draw(st.permutations(ids))
    ws = lambda: draw(st.text(alphabet=" \t\n\r", max_size=2))  # noqa: E731
    items = ",".join(ws() + encode_string(draw, x) + ws() for x in order)
    text = (ws() + "{" + ws() + encode_string(draw, "ranking") + ws() + ":" + ws() + "[" + items + "]" + ws()
            + "}" + ws())
    return ids, order, text


@st.composite
def mutated_outputs(draw):
    ids, _, text = draw(valid_outputs())
    chars = list(text)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        pos = draw(st.integers(0, max(0, len(chars) - 1)))
        ch = draw(st.sampled_from(JSONISH))
        if op == "insert":
            chars.insert(pos, ch)
        elif op == "delete" and chars:
            del chars[pos]
        elif op == "replace" and chars:
            chars[pos] = ch
        elif op == "cut":
            chars = chars[:pos]
    return ids, "".join(chars)


@FAST
@given(valid_outputs())
def test_valid_outputs_are_ok_and_every_prefix_is_viable(case):
    ids, order, text = case
    c = RankingContract(ids)
    v = c.check(text)
    assert v.ok and v.ranking == tuple(order)
    s = c.start()
    close = text.rindex("}")
    for i, ch in enumerate(text):
        s = s.feed(ch)
        assert s is not None, text[: i + 1]
        assert s.accepting == (i >= close)
    for i in range(len(text)):
        assert c.check(text[:i]).kind is (Kind.TRUNCATED if i <= close else Kind.OK)


def _check_consistency(c: RankingContract, text: str):
    v = c.check(text)
    assert v.kind in KINDS
    viable = c.is_viable_prefix(text)
    assert v.ok == (viable and c.start().feed(text).accepting)
    assert (v.kind is Kind.TRUNCATED) == (viable and not v.ok)
    if v.kind not in (Kind.OK, Kind.TRUNCATED):
        assert not viable
    assert v.ok == oracle_ok(text, c.ids)  # the automaton agrees with json.loads + the contract
    return v


@FAST
@given(mutated_outputs())
def test_near_valid_outputs_agree_with_json(case):
    ids, text = case
    _check_consistency(RankingContract(ids), text)


@FAST
@given(st.text(max_size=80))
def test_judge_never_raises_on_any_text(text):
    _check_consistency(ABC, text)
    ABC.repair(text)


@FAST
@given(st.from_regex(r'\s?\{?\s?("ranking"|"rank"|"r\\u0061nking"|ranking)?\s?:?\s?\[?'
                     r'(\s?"(A|B|C|D|\\u004[1-4]|\\"|\\)?"?\s?,?){0,5}\]?\s?\}?\s?.{0,2}', fullmatch=True))
def test_judge_on_jsonish_regex_texts(text):
    _check_consistency(ABC, text)


@FAST
@given(st.text(alphabet=JSONISH, max_size=40))
def test_judge_on_jsonish_alphabet(text):
    _check_consistency(ABC, text)


def shortest_completion(state, alphabet: str, max_states: int = 20_000):
    """Breadth-first search over the automaton for a string that takes `state` to accepting."""
    queue, seen = deque([(state, "")]), {id(state)}
    while queue:
        s, path = queue.popleft()
        if s.accepting:
            return path
        for ch in alphabet:
            t = s.feed(ch)
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                queue.append((t, path + ch))
        assert len(seen) < max_states
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_outputs())
def test_every_viable_prefix_has_a_completion(case):
    """Soundness of 'viable': a live state really can be completed (found by search, checked by json)."""
    ids, text = case
    c = RankingContract(ids)
    for cut in {len(text), len(text) // 2}:
        prefix = text[:cut]
        state = c.start().feed(prefix)
        if state is None:
            continue
        alphabet = "".join(sorted(set("".join(ids)))) + '"{}[]:,\\u0123456789abcdefABCDEFrankig'
        tail = shortest_completion(state, alphabet)
        assert tail is not None, prefix
        assert c.check(prefix + tail).ok and oracle_ok(prefix + tail, ids)


# ------------------------------------------------------------------------------------------------ repair

@pytest.mark.parametrize("text, expected", [
    ('{"ranking": ["B", "C", "A"]}', ["B", "C", "A"]),                    # valid: itself
    ('```json\n{"ranking": ["C", "A", "A", "Z"]}\n```', ["C", "A", "B"]),  # dedupe, drop unknown, append
    ('Answer: {"result": {"ranking": ["B"]}}', ["B", "A", "C"]),          # first object with the key
    ('["C", "B"] is my answer', ["C", "B", "A"]),                          # a bare list
    ('{"ranking": ["C", "B", "A"', ["C", "B", "A"]),                       # truncated: quoted strings
    ('{"ranking": ["C", "\\u0042", "Q", "C"', ["C", "B", "A"]),
    ("C > A > B", ["C", "A", "B"]),                                         # whole-word ids
    ("[B] then [A]", ["B", "A", "C"]),
    ("ABC", None),                                                          # not a whole word
    ("nothing useful", None),
    ("", None),
])
def test_repair(text, expected):
    assert ABC.repair(text) == expected


@FAST
@given(st.text(alphabet=JSONISH, max_size=40))
def test_repair_is_a_permutation_or_none(text):
    r = ABC.repair(text)
    assert r is None or sorted(r) == ["A", "B", "C"]


# ----------------------------------------------------------------------------------------------- prompts

def _task(rel=None):
    cands = (Candidate("A", "red  shoes\nsize 9"), Candidate("B", "blue hat"), Candidate("C", "green scarf"))
    return Task(id="t1", context="Bought: wool socks.", candidates=cands,
                relevance=rel or {"A": 1, "B": 2, "C": 1}, split="test")


def test_target_text_sorts_by_relevance_ties_in_candidate_order():
    t = _task()
    assert reference_ranking(t) == ["B", "A", "C"]
    assert target_text(t) == '{"ranking": ["B", "A", "C"]}'
    assert RankingContract.for_task(t).check(target_text(t)).ranking == ("B", "A", "C")


def test_render_messages_and_plain_prompt():
    t = _task()
    msgs = render_messages(t)
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == SYSTEM
    user = msgs[1]["content"]
    assert "Bought: wool socks." in user
    assert "[A] red shoes size 9\n[B] blue hat\n[C] green scarf" in user  # one line per candidate
    assert user.endswith('{"ranking": ["A", "B", "C"]}')
    assert "3 candidates" in user
    plain = render_prompt(t)
    assert plain == PLAIN_TEMPLATE.format(system=SYSTEM, user=user) and plain.endswith("Answer:\n")
    assert render_prompt(t, tokenizer=object()) == plain  # no chat template -> plain


def test_render_prompt_uses_the_chat_template():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
                                  unk_token="[UNK]")
    assert render_prompt(_task(), tok) == render_prompt(_task())  # a tokenizer without a template
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    text = render_prompt(_task(), tok)
    assert text.startswith(f"<|system|>{SYSTEM}\n<|user|>Bought") and text.endswith("<|assistant|>")
    # a template that refuses a system turn gets the system text inside the user turn
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
                         "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>")
    text = render_prompt(_task(), tok)
    assert text.startswith(f"<|user|>{SYSTEM}\n\nBought") and text.endswith("<|assistant|>")
