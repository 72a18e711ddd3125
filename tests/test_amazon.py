"""Amazon Reviews 2023 loaders: the real read-only subset (counts from its SOURCE.md) and tiny hand-made dumps."""

import gzip
import json

import pytest

from listopd.task.data.amazon import load_amazon, review_split, truncate
from listopd.util.errors import InputError

# ---------------------------------------------------------------- the real subset


def test_subset_counts_next_item(amazon_subset_dir):
    tasks, st = load_amazon(subset=amazon_subset_dir, task="next-item", min_user_interactions=3)
    assert st.malformed == 0
    assert st.interactions_after_join == st.interactions_after_dedupe == 1008
    assert (st.users, st.items) == (914, 1008)
    assert [st.users_with_at_least[n] for n in (2, 3, 4, 5)] == [62, 16, 4, 3]
    assert st.max_user_interactions == 12
    assert (st.users_kept, st.interactions_kept) == (16, 64)
    # test = last item of each of the 16 users, validation = second-last, train = one per earlier position >= 1
    assert st.tasks == {"train": 16, "validation": 16, "test": 16}
    assert len(tasks) == 48

    tasks2, st2 = load_amazon(subset=amazon_subset_dir, task="next-item", min_user_interactions=2)
    assert st2.users_kept == 62
    # the 46 two-item users give a test task only (their validation item has no history)
    assert st2.tasks == {"train": 16, "validation": 16, "test": 62}
    assert st2.skipped == {"validation_without_history": 46}


def test_subset_review_item(amazon_subset_dir):
    tasks, st = load_amazon(subset=amazon_subset_dir, task="review-item")
    assert len(tasks) == 1008 and (st.users, st.items) == (914, 1008) and st.malformed == 0
    assert st.tasks == {"train": 814, "validation": 107, "test": 87}
    assert all(t.split == review_split(t.meta["user_id"]) for t in tasks)
    t = tasks[0]
    assert t.context.startswith("Review title: ") and "\nReview: " in t.context
    texts = [t.context.split("\nReview: ", 1)[1] for t in tasks]
    assert max(len(x) for x in texts) <= 500  # review text cut at 500 characters by default
    assert sum(x.endswith("...") for x in texts) > 50  # the subset has many longer reviews


def test_subset_tasks_well_formed(amazon_subset_dir):
    tasks, _ = load_amazon(subset=amazon_subset_dir, min_user_interactions=2, seed=3)
    for t in tasks:
        assert t.candidate_ids == tuple("ABCDEFGH")
        assert sorted(t.relevance.values()) == [0.0] * 7 + [1.0]
        assert t.relevance[t.meta["target"]] == 1.0
        assert len({c.text for c in t.candidates}) == 8  # no two candidates share a title
        assert not set(t.meta["items"].values()) - {t.meta["items"][t.meta["target"]]} & set(t.meta["history"])


# ---------------------------------------------------------------- hand-made raw dumps

TITLES = {f"i{n}": f"Brand{n} Women's Thing Number {n}" for n in range(1, 21)}


def _write_jsonl(path, lines, gz=False):
    data = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _review(user, item, ts, **kw):
    return {"user_id": user, "parent_asin": item, "asin": item + "v", "timestamp": ts, "rating": 5.0,
            "title": kw.get("title", f"review of {item}"), "text": kw.get("text", "fits well &amp; looks<br />great")}


@pytest.fixture
def raw(tmp_path):
    reviews = [
        _review("u1", "i3", 3000),
        _review("u1", "i1", 1000),
        _review("u1", "i2", 2000),
        _review("u1", "i4", 4000),
        _review("u1", "i2", 5000),  # later duplicate of (u1, i2): dropped
        _review("u1", "i3", 500),  # earlier duplicate of (u1, i3), later in the file: this one is kept
        "{not json",  # line 7: malformed
        _review("u2", "i5", 10),
        _review("u2", "i6", 30),
        _review("u2", "i1", 20),
        ["a", "list"],  # line 11: malformed
        {"parent_asin": "i7", "timestamp": 5},  # line 12: no user_id
        _review("u3", "i1", 7),
        _review("u3", "i7", 8),
        _review("u4", "nometa", 1),  # no metadata: dropped
        _review("u4", "untitled", 2),  # empty title: dropped
        _review("u4", "i8", 3),
        "",  # blank line, not malformed
    ]
    reviews += [_review(f"s{n}", f"i{n}", 100 + n) for n in range(9, 21)]  # one-review users: the catalogue
    meta = [{"parent_asin": a, "title": t, "main_category": "AMAZON FASHION"} for a, t in TITLES.items()]
    meta += [{"parent_asin": "untitled", "title": ""}, "{broken", {"title": "no asin"}]
    return (_write_jsonl(tmp_path / "Amazon_Fashion.jsonl.gz", reviews, gz=True),
            _write_jsonl(tmp_path / "meta_Amazon_Fashion.jsonl", meta))


def _by_user(tasks, user):
    return {(t.split, t.meta["items"][t.meta["target"]]): t for t in tasks if t.meta["user_id"] == user}


def test_raw_counts(raw):
    reviews, meta = raw
    tasks, st = load_amazon(reviews=reviews, meta=meta)
    assert st.reviews_read == 27 and st.blank_lines == 1  # JSON objects read (line 12 is one, but malformed)
    assert st.meta_read == 22
    assert st.malformed == 5  # 3 in reviews, 2 in meta
    assert any(e.startswith(f"{reviews}:7: not JSON") for e in st.malformed_examples)
    assert any(e.startswith(f"{reviews}:11: not a JSON object") for e in st.malformed_examples)
    assert any(e.startswith(f"{reviews}:12: missing or empty user_id") for e in st.malformed_examples)
    assert st.dropped_no_title == 2 and st.interactions_after_join == 24
    assert st.dropped_duplicates == 2 and st.interactions_after_dedupe == 22
    assert st.users == 16 and st.items == 20
    assert st.users_with_at_least == {1: 16, 2: 3, 3: 2, 4: 1, 5: 0}
    assert st.min_user_interactions == 3 and st.users_kept == 2 and st.interactions_kept == 7
    assert st.tasks == {"train": 1, "validation": 2, "test": 2}


def test_raw_time_split_dedupe_and_join(raw):
    tasks, _ = load_amazon(reviews=raw[0], meta=raw[1])
    u1 = _by_user(tasks, "u1")  # deduped sequence: i3 (t=500), i1, i2, i4
    assert set(u1) == {("train", "i1"), ("validation", "i2"), ("test", "i4")}
    assert u1[("train", "i1")].meta["history"] == ["i3"]
    assert u1[("test", "i4")].meta["history"] == ["i3", "i1", "i2"]
    assert u1[("test", "i4")].context == ("Purchase history (oldest first):\n"
                                          f"1. {TITLES['i3']}\n2. {TITLES['i1']}\n3. {TITLES['i2']}")
    u2 = _by_user(tasks, "u2")  # sorted by time, not file order: i5, i1, i6
    assert set(u2) == {("validation", "i1"), ("test", "i6")}
    for t in tasks:
        for cid, item in t.meta["items"].items():
            assert {c.id: c.text for c in t.candidates}[cid] == TITLES[item]  # title join


def test_raw_negatives_exclude_history(raw):
    seqs = {"u1": {"i1", "i2", "i3", "i4"}, "u2": {"i1", "i5", "i6"}}
    for seed in range(20):
        tasks, _ = load_amazon(reviews=raw[0], meta=raw[1], seed=seed)
        for t in tasks:
            items = t.meta["items"]
            negatives = {item for cid, item in items.items() if cid != t.meta["target"]}
            assert len(negatives) == 7 and not negatives & seqs[t.meta["user_id"]]
            assert negatives <= set(TITLES)  # the reviewed, titled catalogue


def test_raw_determinism(raw):
    a, _ = load_amazon(reviews=raw[0], meta=raw[1], seed=1)
    b, _ = load_amazon(reviews=raw[0], meta=raw[1], seed=1)
    c, _ = load_amazon(reviews=raw[0], meta=raw[1], seed=2)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]
    assert [t.to_dict() for t in a] != [t.to_dict() for t in c]


def test_raw_threshold_two(raw):
    tasks, st = load_amazon(reviews=raw[0], meta=raw[1], min_user_interactions=2)
    assert st.users_kept == 3 and st.tasks == {"train": 1, "validation": 2, "test": 3}
    assert st.skipped == {"validation_without_history": 1}
    assert set(_by_user(tasks, "u3")) == {("test", "i7")}


def test_raw_strict_and_missing(raw, tmp_path):
    with pytest.raises(InputError, match=r"Amazon_Fashion.jsonl.gz:7"):
        load_amazon(reviews=raw[0], meta=raw[1], strict=True)
    with pytest.raises(InputError, match="file not found"):
        load_amazon(reviews=tmp_path / "nope.jsonl", meta=raw[1])
    with pytest.raises(InputError, match="either a subset folder"):
        load_amazon(reviews=raw[0])


def test_raw_review_item(raw):
    tasks, st = load_amazon(reviews=raw[0], meta=raw[1], task="review-item", max_review_chars=40)
    assert st.min_user_interactions == 1 and len(tasks) == 22 == sum(st.tasks.values())
    t = next(t for t in tasks if t.meta["user_id"] == "u1" and t.meta["items"][t.meta["target"]] == "i3")
    assert t.meta["timestamp"] == 500
    assert t.context == "Review title: review of i3\nReview: fits well & looks great"
    reviewed = {"u1": {"i1", "i2", "i3", "i4"}, "u2": {"i1", "i5", "i6"}, "u3": {"i1", "i7"}, "u4": {"i8"}}
    for t in tasks:
        target = t.meta["items"][t.meta["target"]]
        assert not (set(t.meta["items"].values()) - {target}) & reviewed.get(t.meta["user_id"], set())
        assert t.split == review_split(t.meta["user_id"])


def test_truncate():
    assert truncate("short", 10) == "short"
    s = truncate("one two three four five six seven", 20)
    assert len(s) <= 20 and s.endswith("...") and s == "one two three..."
