"""Amazon Reviews 2023 (`Amazon_Fashion`) loaders and the two K-ary tasks built from them.

Sources (either):
  * the raw McAuley Lab dumps `Amazon_Fashion.jsonl(.gz)` (reviews) and `meta_Amazon_Fashion.jsonl(.gz)`
    (metadata), streamed line by line: reviews are kept as compact tuples (user, parent_asin, timestamp, order,
    review text only for the review-item task), and metadata only as titles of items that have a review;
  * the real read-only subset folder (`mingxuan_he_2023_subset/`): `interactions.csv` + `items.csv`, or, for the
    review-item task (which needs review text), the joined `amazon_subset_0512.csv.gz` (csv module: its review
    text has embedded newlines).

Malformed input (a line that is not a JSON object, a missing user_id / parent_asin / timestamp, a bad timestamp)
is counted in the stats with file:line for the first few; with `strict=True` the first one raises InputError.
Nothing is dropped silently: every drop has a counter in `AmazonStats`.

Pipeline rules, in order:
  1. Title join on parent_asin: interactions whose item has no (non-empty) metadata title are dropped (counted).
  2. Dedupe: a repeated (user, parent_asin) pair keeps its earliest review (ties: first in the file).
  3. Catalogue = every item left after 2 (titled items with at least one review, before any user threshold).
  4. User threshold: keep users with >= `min_user_interactions` interactions (default 3 for next-item:
     history >= 1 + validation + test; default 1 for review-item). No item-side threshold (Amazon_Fashion has
     no 5-core: it empties under 5-core).

Next-item task, per kept user with items s[0..n-1] sorted by time (ties: file order):
  * test: target s[n-1], validation: target s[n-2], train: targets s[1..n-3] (one train task per earlier
    position with a non-empty history; `train_tasks=False` turns them off). Leave-last-out, as in
    hyp1231/AmazonReviews2023 `last_out_split.py`.
  * A task needs a history of >= 1 item, so a user with exactly 2 interactions gives a test task only (its
    validation task would have no history; counted as `skipped.validation_without_history`).
  * context = the most recent `history_len` (default 5) history titles, oldest first; candidates = the target +
    K-1 negatives drawn uniformly from the catalogue, excluding the user's whole sequence (past and future) and
    any title already among the candidates; order shuffled. Relevance: target 1, negatives 0 (graded
    alternatives, e.g. LLM-graded, are open).
Review-item task ("which product is this review about?"), one per kept review:
  * context = "Review title: ...\\nReview: ..." with the text cut to `max_review_chars` (default 500) at a word
    boundary + "..."; candidates = the reviewed item + K-1 others (same negative rule, excluding every item that
    user reviewed); relevance 1/0. Reviews with empty title and text are skipped (counted).
  * split by user id only (not the seed): sha256("listopd-review-split:" + user_id) as a fraction u in [0, 1):
    u < 0.1 -> test, u < 0.2 -> validation, else train. A user's reviews all land in one split.

Determinism: each task draws from its own `random.Random(f"{seed}:{task_id}")`, so a task does not depend on any
other user. Texts: HTML entities unescaped, <br> tags and whitespace runs collapsed to one space, titles cut to
`max_title_chars` (default 150) at a word boundary + "...". Candidate ids are "A".."H" for K=8.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from listopd.task.data.synth import history_context, letter_ids
from listopd.task.tasks import Candidate, Task
from listopd.util.errors import DomainError, InputError
from listopd.util.jsonl import open_binary

TASK_KINDS = ("next-item", "review-item")
SUBSET_FILES = ("interactions.csv", "items.csv", "amazon_subset_0512.csv.gz")
MAX_EXAMPLES = 5  # malformed-line locations kept per stats object
REVIEW_SPLIT = ((0.1, "test"), (0.2, "validation"), (1.0, "train"))

# one interaction: (user_id, parent_asin, timestamp_ms, order_in_input, (review title, text) or None)
Interaction = tuple[str, str, int, int, "tuple[str, str] | None"]


@dataclass
class AmazonStats:
    """What the loader read, dropped and built. `to_dict()` is what `listopd data amazon` writes as stats.json."""

    task: str = "next-item"
    sources: list[str] = field(default_factory=list)
    reviews_read: int = 0  # review records parsed (raw lines or CSV rows)
    meta_read: int = 0  # metadata records parsed
    blank_lines: int = 0
    malformed: int = 0  # bad lines/rows in any input file
    malformed_examples: list[str] = field(default_factory=list)  # "file:line: reason", first few
    items_with_title: int = 0  # reviewed items that have a non-empty title
    dropped_no_title: int = 0  # interactions whose item has no title
    interactions_after_join: int = 0
    dropped_duplicates: int = 0  # repeated (user, item) pairs, later copies
    interactions_after_dedupe: int = 0
    users: int = 0  # after dedupe, before the user threshold
    items: int = 0  # = catalogue size
    users_with_at_least: dict[int, int] = field(default_factory=dict)  # n -> users with >= n interactions
    max_user_interactions: int = 0
    min_user_interactions: int = 0
    users_kept: int = 0
    interactions_kept: int = 0
    tasks: dict[str, int] = field(default_factory=lambda: {"train": 0, "validation": 0, "test": 0})
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> tasks not built

    def bad(self, path, line: int, reason: str, strict: bool) -> None:
        """Record one malformed input line (raise at once when strict)."""
        if strict:
            raise InputError(reason, path=str(path), line=line)
        self.malformed += 1
        if len(self.malformed_examples) < MAX_EXAMPLES:
            self.malformed_examples.append(f"{path}:{line}: {reason}")

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["users_with_at_least"] = {str(k): v for k, v in self.users_with_at_least.items()}
        return d


# ---------------------------------------------------------------- text helpers

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WS = re.compile(r"\s+")


def clean_text(s: str) -> str:
    """Unescape HTML entities, turn <br> tags into spaces, collapse whitespace."""
    return _WS.sub(" ", _BR.sub(" ", html.unescape(s or ""))).strip()


def truncate(s: str, max_chars: int) -> str:
    """Cut to at most max_chars characters, at a word boundary where one is near, marking the cut with '...'."""
    if max_chars <= 0 or len(s) <= max_chars:
        return s
    cut = s[: max_chars - 3]
    if " " in cut[len(cut) // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-") + "..."


def review_context(title: str, text: str, max_chars: int) -> str:
    """The review-item context: review title, then the review text cut to max_chars."""
    return f"Review title: {title}\nReview: {truncate(text, max_chars)}"


def _timestamp(value) -> int | None:
    """Unix ms as int; None where it is not a number."""
    try:
        if isinstance(value, bool):
            return None
        return int(float(value)) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


# ---------------------------------------------------------------- raw JSONL streaming

def iter_json_objects(path, stats: AmazonStats, strict: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each JSON-object line; bad lines are counted (or raise when strict)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=str(path))
    with open_binary(path) as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                stats.blank_lines += 1
                continue
            try:
                obj = json.loads(raw)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                stats.bad(path, line_no, f"not JSON ({type(e).__name__})", strict)
                continue
            if not isinstance(obj, dict):
                stats.bad(path, line_no, f"not a JSON object ({type(obj).__name__})", strict)
                continue
            yield line_no, obj


def _interaction(rec: dict, order: int, text_chars: int, where: tuple, stats: AmazonStats,
                 strict: bool, interned: dict) -> Interaction | None:
    """A review record -> compact tuple, or None (counted) when a required field is missing or bad.
    text_chars > 0 keeps the review (title, text cut to text_chars); 0 keeps no text."""
    user, item, ts = rec.get("user_id"), rec.get("parent_asin"), _timestamp(rec.get("timestamp"))
    for name, value in (("user_id", user), ("parent_asin", item)):
        if not isinstance(value, str) or not value:
            stats.bad(*where, f"missing or empty {name}", strict)
            return None
    if ts is None:
        stats.bad(*where, f"bad timestamp {rec.get('timestamp')!r}", strict)
        return None
    review = None
    if text_chars > 0:
        review = (clean_text(str(rec.get("title") or "")), truncate(clean_text(str(rec.get("text") or "")), text_chars))
    return (interned.setdefault(user, user), interned.setdefault(item, item), ts, order, review)


def read_reviews(path, stats: AmazonStats, *, text_chars: int = 0, strict: bool = False) -> list[Interaction]:
    """Stream `Amazon_Fashion.jsonl(.gz)` into compact interaction tuples (review text, cut to text_chars, only
    if text_chars > 0: the review-item task needs it, next-item does not)."""
    stats.sources.append(str(path))
    out: list[Interaction] = []
    interned: dict[str, str] = {}
    for line_no, rec in iter_json_objects(path, stats, strict):
        stats.reviews_read += 1
        it = _interaction(rec, len(out), text_chars, (path, line_no), stats, strict, interned)
        if it is not None:
            out.append(it)
    return out


def read_titles(path, stats: AmazonStats, wanted: set[str] | None = None, *, strict: bool = False) -> dict[str, str]:
    """Stream `meta_Amazon_Fashion.jsonl(.gz)` -> {parent_asin: cleaned title}, keeping only `wanted` items
    (None: all) and only non-empty titles. A line without parent_asin counts as malformed."""
    stats.sources.append(str(path))
    titles: dict[str, str] = {}
    for line_no, rec in iter_json_objects(path, stats, strict):
        stats.meta_read += 1
        asin = rec.get("parent_asin")
        if not isinstance(asin, str) or not asin:
            stats.bad(path, line_no, "missing or empty parent_asin", strict)
            continue
        if wanted is not None and asin not in wanted:
            continue
        title = clean_text(str(rec.get("title") or ""))
        if title:
            titles[asin] = title
    return titles


# ---------------------------------------------------------------- the real subset (CSV)

def _iter_csv(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (starting line number, row dict) from a CSV (plain or .gz); csv handles embedded newlines."""
    if not path.is_file():
        raise InputError("file not found", path=str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        line = reader.line_num + 1
        for row in reader:
            yield line, row
            line = reader.line_num + 1


def read_subset(folder, stats: AmazonStats, *, text_chars: int = 0,
                strict: bool = False) -> tuple[list[Interaction], dict[str, str]]:
    """The `mingxuan_he_2023_subset/` layout -> (interactions, titles). With text_chars == 0: interactions.csv +
    items.csv; with text_chars > 0 (review-item): the joined amazon_subset_0512.csv.gz (title_x = item title,
    title_y = review title, text = review text)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("subset folder not found", path=str(folder))
    interned: dict[str, str] = {}
    out: list[Interaction] = []
    titles: dict[str, str] = {}
    if text_chars > 0:
        path = folder / "amazon_subset_0512.csv.gz"
        stats.sources.append(str(path))
        for line, row in _iter_csv(path):
            stats.reviews_read += 1
            rec = {**row, "title": row.get("title_y"), "text": row.get("text")}
            it = _interaction(rec, len(out), text_chars, (path, line), stats, strict, interned)
            if it is None:
                continue
            out.append(it)
            title = clean_text(row.get("title_x") or "")
            if title:
                titles[it[1]] = title
        stats.meta_read = len(titles)
        return out, titles
    path = folder / "interactions.csv"
    stats.sources.append(str(path))
    for line, row in _iter_csv(path):
        stats.reviews_read += 1
        it = _interaction(row, len(out), 0, (path, line), stats, strict, interned)
        if it is not None:
            out.append(it)
    path = folder / "items.csv"
    stats.sources.append(str(path))
    for line, row in _iter_csv(path):
        stats.meta_read += 1
        asin = row.get("parent_asin") or ""
        if not asin:
            stats.bad(path, line, "missing or empty parent_asin", strict)
            continue
        title = clean_text(row.get("title") or "")
        if title:
            titles[asin] = title
    return out, titles


# ---------------------------------------------------------------- filtering

def join_titles(interactions: list[Interaction], titles: dict[str, str], stats: AmazonStats) -> list[Interaction]:
    """Drop interactions whose item has no title (counted as dropped_no_title)."""
    kept = [it for it in interactions if it[1] in titles]
    stats.dropped_no_title = len(interactions) - len(kept)
    stats.items_with_title = len({it[1] for it in kept})
    stats.interactions_after_join = len(kept)
    return kept


def dedupe(interactions: list[Interaction], stats: AmazonStats) -> list[Interaction]:
    """Keep the earliest review of each (user, item) pair (ties: first in the input)."""
    best: dict[tuple[str, str], Interaction] = {}
    for it in interactions:
        key = (it[0], it[1])
        if key not in best or (it[2], it[3]) < (best[key][2], best[key][3]):
            best[key] = it
    kept = sorted(best.values(), key=lambda it: it[3])
    stats.dropped_duplicates = len(interactions) - len(kept)
    stats.interactions_after_dedupe = len(kept)
    return kept


def user_sequences(interactions: list[Interaction]) -> dict[str, list[Interaction]]:
    """Each user's interactions sorted by (timestamp, input order)."""
    seqs: dict[str, list[Interaction]] = defaultdict(list)
    for it in interactions:
        seqs[it[0]].append(it)
    for seq in seqs.values():
        seq.sort(key=lambda it: (it[2], it[3]))
    return dict(seqs)


def count_users(seqs: dict[str, list], stats: AmazonStats, upto: int = 5) -> None:
    """Fill users, items, users_with_at_least {1..upto} and max_user_interactions."""
    lengths = Counter(len(s) for s in seqs.values())
    stats.users = len(seqs)
    stats.users_with_at_least = {n: sum(c for m, c in lengths.items() if m >= n) for n in range(1, upto + 1)}
    stats.max_user_interactions = max(lengths, default=0)


def threshold_users(seqs: dict[str, list], min_user_interactions: int, stats: AmazonStats) -> dict[str, list]:
    """Keep users with at least min_user_interactions (deduped, titled) interactions."""
    kept = {u: s for u, s in seqs.items() if len(s) >= min_user_interactions}
    stats.min_user_interactions = min_user_interactions
    stats.users_kept = len(kept)
    stats.interactions_kept = sum(len(s) for s in kept.values())
    return kept


# ---------------------------------------------------------------- task building

def sample_negatives(rng: random.Random, catalogue: list[str], titles: dict[str, str], n: int,
                     exclude: set[str], target: str) -> list[str] | None:
    """n distinct items drawn uniformly from the catalogue: never the target, never in `exclude` (the user's
    items), never a title already among the candidates. Rejection sampling first (catalogues are large), then
    a scan; None if the catalogue cannot supply n. `exclude` is not copied (users can have long histories)."""
    out: list[str] = []
    picked, taken = {target}, {titles[target]}

    def ok(item: str) -> bool:
        return item not in exclude and item not in picked and titles[item] not in taken

    for _ in range(50 * n):
        if len(out) == n:
            return out
        item = catalogue[rng.randrange(len(catalogue))]
        if ok(item):
            out.append(item)
            picked.add(item)
            taken.add(titles[item])
    pool = [i for i in catalogue if ok(i)]
    rng.shuffle(pool)
    for item in pool:
        if len(out) == n:
            break
        if ok(item):
            out.append(item)
            picked.add(item)
            taken.add(titles[item])
    return out if len(out) == n else None


def make_task(task_id: str, split: str, context: str, target: str, catalogue: list[str], titles: dict[str, str],
              exclude: set[str], k: int, seed: int, max_title_chars: int, meta: dict) -> Task | None:
    """Target + K-1 negatives, shuffled, ids "A".. in the shuffled order, relevance target 1 / negatives 0."""
    rng = random.Random(f"{seed}:{task_id}")
    negatives = sample_negatives(rng, catalogue, titles, k - 1, exclude, target)
    if negatives is None:
        return None
    items = [target] + negatives
    rng.shuffle(items)
    ids = letter_ids(k)
    return Task(
        id=task_id,
        context=context,
        candidates=tuple(Candidate(cid, truncate(titles[i], max_title_chars)) for cid, i in zip(ids, items)),
        relevance={cid: (1.0 if i == target else 0.0) for cid, i in zip(ids, items)},
        split=split,
        meta={**meta, "target": ids[items.index(target)], "items": dict(zip(ids, items))},
    )


def next_item_tasks(seqs: dict[str, list[Interaction]], titles: dict[str, str], catalogue: list[str],
                    stats: AmazonStats, *, k: int = 8, seed: int = 0, history_len: int = 5,
                    train_tasks: bool = True, max_title_chars: int = 150) -> list[Task]:
    """Leave-last-out next-item tasks (rules in the module docstring), users in sorted order."""
    tasks: list[Task] = []
    for user in sorted(seqs):
        items = [it[1] for it in seqs[user]]
        seen, n = set(items), len(items)
        targets = [(i, "train") for i in range(1, n - 2)] if train_tasks else []
        targets += [(n - 2, "validation"), (n - 1, "test")]
        for pos, split in targets:
            if pos < 1:
                stats.skip(f"{split}_without_history")
                continue
            history = items[max(0, pos - history_len): pos]
            task = make_task(
                f"amz-ni-{user}-{pos}", split,
                history_context([truncate(titles[i], max_title_chars) for i in history]),
                items[pos], catalogue, titles, seen, k, seed, max_title_chars,
                {"task": "next-item", "source": "amazon_fashion", "user_id": user,
                 "timestamp": seqs[user][pos][2], "history": history},
            )
            if task is None:
                stats.skip("too_few_negatives")
                continue
            tasks.append(task)
    return tasks


def review_split(user_id: str) -> str:
    """The review-item split of a user: a fixed hash of the user id (independent of the seed)."""
    h = hashlib.sha256(f"listopd-review-split:{user_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    return next(split for bound, split in REVIEW_SPLIT if u < bound)


def review_item_tasks(seqs: dict[str, list[Interaction]], titles: dict[str, str], catalogue: list[str],
                      stats: AmazonStats, *, k: int = 8, seed: int = 0, max_review_chars: int = 500,
                      max_title_chars: int = 150) -> list[Task]:
    """One "which product is this review about?" task per review (rules in the module docstring)."""
    tasks: list[Task] = []
    for user in sorted(seqs):
        split = review_split(user)
        reviewed = {it[1] for it in seqs[user]}
        for user_, item, ts, _, review in seqs[user]:
            title, text = review or ("", "")
            if not (title or text):
                stats.skip("empty_review")
                continue
            task = make_task(
                f"amz-ri-{user}-{item}", split, review_context(title, text, max_review_chars),
                item, catalogue, titles, reviewed, k, seed, max_title_chars,
                {"task": "review-item", "source": "amazon_fashion", "user_id": user, "timestamp": ts},
            )
            if task is None:
                stats.skip("too_few_negatives")
                continue
            tasks.append(task)
    return tasks


# ---------------------------------------------------------------- one call

def load_amazon(*, reviews=None, meta=None, subset=None, task: str = "next-item",
                min_user_interactions: int | None = None, k: int = 8, seed: int = 0, history_len: int = 5,
                train_tasks: bool = True, max_review_chars: int = 500, max_title_chars: int = 150,
                strict: bool = False) -> tuple[list[Task], AmazonStats]:
    """Read raw dumps (`reviews` + `meta`) or a subset folder, filter, and build tasks -> (tasks, stats).

    min_user_interactions defaults to 3 for next-item and 1 for review-item."""
    if task not in TASK_KINDS:
        raise DomainError(f"task must be one of {', '.join(TASK_KINDS)}, got {task!r}")
    letter_ids(k)
    if (subset is not None and (reviews is not None or meta is not None)) or \
            (subset is None and (reviews is None or meta is None)):
        raise InputError("give either a subset folder, or both a reviews file and a meta file")
    if min_user_interactions is None:
        min_user_interactions = 3 if task == "next-item" else 1
    if min_user_interactions < 1:
        raise DomainError(f"min_user_interactions must be >= 1, got {min_user_interactions}")
    if history_len < 1:
        raise DomainError(f"history_len must be >= 1, got {history_len}")

    stats = AmazonStats(task=task)
    text_chars = max_review_chars if task == "review-item" else 0
    if subset is not None:
        interactions, titles = read_subset(subset, stats, text_chars=text_chars, strict=strict)
    else:
        interactions = read_reviews(reviews, stats, text_chars=text_chars, strict=strict)
        titles = read_titles(meta, stats, wanted={it[1] for it in interactions}, strict=strict)
    interactions = dedupe(join_titles(interactions, titles, stats), stats)
    seqs = user_sequences(interactions)
    count_users(seqs, stats)
    catalogue = sorted({it[1] for it in interactions})
    stats.items = len(catalogue)
    seqs = threshold_users(seqs, min_user_interactions, stats)
    if task == "next-item":
        tasks = next_item_tasks(seqs, titles, catalogue, stats, k=k, seed=seed, history_len=history_len,
                                train_tasks=train_tasks, max_title_chars=max_title_chars)
    else:
        tasks = review_item_tasks(seqs, titles, catalogue, stats, k=k, seed=seed,
                                  max_review_chars=max_review_chars, max_title_chars=max_title_chars)
    stats.tasks = {s: sum(t.split == s for t in tasks) for s in ("train", "validation", "test")}
    return tasks, stats


def format_stats(stats: AmazonStats) -> str:
    """A few human-readable lines for the CLI."""
    at_least = ", ".join(f">={n}: {c}" for n, c in stats.users_with_at_least.items())
    lines = [
        f"read: {stats.reviews_read} reviews, {stats.meta_read} metadata records, {stats.malformed} malformed",
        f"interactions: {stats.interactions_after_join} titled ({stats.dropped_no_title} without title), "
        f"{stats.interactions_after_dedupe} after dedupe ({stats.dropped_duplicates} duplicates)",
        f"users: {stats.users} ({at_least}; max {stats.max_user_interactions}), items: {stats.items}",
        f"threshold: >= {stats.min_user_interactions} interactions per user -> {stats.users_kept} users, "
        f"{stats.interactions_kept} interactions",
        f"{stats.task} tasks: " + ", ".join(f"{s} {n}" for s, n in stats.tasks.items())
        + (f" (skipped: {', '.join(f'{r} {n}' for r, n in sorted(stats.skipped.items()))})" if stats.skipped else ""),
    ]
    lines += [f"malformed: {e}" for e in stats.malformed_examples]
    return "\n".join(lines)
