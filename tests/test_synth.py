"""The embedded synthetic fashion dataset: deterministic, sized as asked, no user leakage, and learnable."""

import re
from collections import Counter

import pytest

from listopd.task.data.synth import SynthConfig, make_catalogue_for, make_synth_tasks
from listopd.util.errors import DomainError

SMALL = SynthConfig(n_items=300, n_users=400, seed=7)


@pytest.fixture(scope="module")
def tasks():
    return make_synth_tasks(SMALL)


def test_deterministic_by_seed(tasks):
    again = make_synth_tasks(SMALL)
    assert [t.to_dict() for t in again] == [t.to_dict() for t in tasks]
    other = make_synth_tasks(SMALL, seed=8)
    assert [t.to_dict() for t in other] != [t.to_dict() for t in tasks]


def test_sizes_and_k(tasks):
    assert Counter(t.split for t in tasks) == {"train": 320, "validation": 40, "test": 40}
    assert all(t.candidate_ids == tuple("ABCDEFGH") for t in tasks)
    more = make_synth_tasks(n_items=200, n_users=30, tasks_per_user=3, k=5, history_len=4, min_history=2,
                            validation_frac=0.2, test_frac=0.2)
    assert Counter(t.split for t in more) == {"train": 54, "validation": 18, "test": 18}
    assert all(t.candidate_ids == tuple("ABCDE") for t in more)
    assert all(2 <= t.context.count("\n") <= 4 for t in more)  # history lines (one header line before)
    with pytest.raises(DomainError):
        make_synth_tasks(n_items=20, n_users=10)
    with pytest.raises(DomainError):
        make_synth_tasks(k=27)


def test_relevance_grades(tasks):
    values = Counter(v for t in tasks for v in t.relevance.values())
    assert set(values) == {0.0, 1.0, 2.0, 3.0}
    assert values[0.0] > values[3.0] > 0  # every grade occurs; most candidates are irrelevant
    assert all(set(t.relevance) == set(t.candidate_ids) for t in tasks)
    # the held-out next purchase is usually highly relevant
    assert sum(t.relevance[t.meta["next"]] >= 2 for t in tasks) > 0.6 * len(tasks)


def test_no_user_leakage(tasks):
    users = {s: {t.meta["user"] for t in tasks if t.split == s} for s in ("train", "validation", "test")}
    assert not users["train"] & users["validation"]
    assert not users["train"] & users["test"]
    assert not users["validation"] & users["test"]


def test_candidates_distinct_and_not_in_history(tasks):
    for t in tasks:
        texts = [c.text for c in t.candidates]
        assert len(set(texts)) == len(texts)
        history = [line.split(". ", 1)[1] for line in t.context.splitlines()[1:]]
        assert 3 <= len(history) <= 5 and not set(history) & set(texts)


# "<Brand> <Audience> [Descriptor] <Product> - <Colour>, <Style>, <Material>"
TITLE = re.compile(r"^[A-Z][A-Za-z&' ]+ (Women's|Men's|Unisex) [A-Za-z\- ]+"
                   r" - [A-Z][A-Za-z ]+, [A-Z][a-z]+, [A-Z][A-Za-z ]+$")


def test_titles_look_like_shop_titles(tasks):
    items = make_catalogue_for(SMALL)
    assert len({it.title for it in items}) == len(items) == 300
    for it in items:
        assert TITLE.match(it.title), it.title
        assert it.brand in it.title and it.colour in it.title and it.material in it.title
        assert len(it.title) <= 90
    # a K=8 task with up to 5 history titles stays short (~300 tokens at ~3.5-4 characters per token)
    sizes = [len(t.context) + sum(len(c.text) for c in t.candidates) for t in tasks]
    assert sum(sizes) / len(sizes) < 900 and max(sizes) < 1100


def _words(s):
    return set(re.findall(r"[a-z']+", s.lower()))


def _ndcg1(relevance, top):
    best = max(relevance.values())
    return (2 ** relevance[top] - 1) / (2 ** best - 1) if best > 0 else 0.0


def test_learnable_by_attribute_overlap(tasks):
    """Rank candidates by how many history words they share (brand, colour, style, material, product words);
    its NDCG@1 must clearly beat random order (expected NDCG@1 of a uniformly random top candidate)."""
    baseline, random_ = [], []
    for t in tasks:
        history = Counter(w for line in t.context.splitlines()[1:] for w in _words(line.split(". ", 1)[1]))
        score = {c.id: sum(history[w] for w in _words(c.text)) for c in t.candidates}
        top = max(t.candidate_ids, key=lambda cid: score[cid])  # ties: first in order
        baseline.append(_ndcg1(t.relevance, top))
        random_.append(sum(_ndcg1(t.relevance, cid) for cid in t.candidate_ids) / t.k)
    b, r = sum(baseline) / len(baseline), sum(random_) / len(random_)
    assert b > r + 0.2, (b, r)
    assert b > 1.8 * r, (b, r)


def test_learnability_options_change_titles_and_utility_but_not_the_defaults():
    from listopd.task.data.synth import SynthConfig, make_catalogue_for, make_synth_tasks

    base = dict(n_items=120, n_users=30, k=4, history_len=2, min_history=1, seed=3)
    default = make_synth_tasks(**base)
    explicit = make_synth_tasks(**base, title_format="full", weights=(1.0, 0.7, 0.6, 0.5, 0.5), utility_noise=0.1,
                                history_uniform_mix=0.15)
    assert [t.to_dict() for t in default] == [t.to_dict() for t in explicit]
    plain = make_catalogue_for(SynthConfig(**base, title_format="plain"))
    assert all(len(it.title.split()) <= 5 and " - " not in it.title for it in plain)
    other = make_synth_tasks(**base, weights=(1.0, 0.0, 0.0, 0.0, 0.0), utility_noise=0.0)
    assert [t.relevance for t in other] != [t.relevance for t in default]
    for bad in (dict(weights=(0, 0, 0, 0, 0)), dict(weights=(1, 1)), dict(title_format="fancy"),
                dict(title_format="plain", n_items=10_000), dict(history_uniform_mix=1.5)):
        with pytest.raises(DomainError):
            make_synth_tasks(**{**base, **bad})


def test_data_synth_refuses_bad_weights_in_one_line(tmp_path, capsys):
    from listopd.cli import main

    with pytest.raises(SystemExit) as e:  # argparse's refusal: one line, exit 2
        main(["data", "synth", "--out", str(tmp_path / "d"), "--weights", "1,x"])
    assert e.value.code == 2
    assert "expected five comma-separated numbers" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
