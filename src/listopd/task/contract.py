"""The output contract of the listwise task: strict check, exact prefix automaton, lenient repair.

A valid output is exactly one JSON object with one member, the key (default "ranking"), whose value is a
list of strings that is a permutation of exactly the K candidate ids:

    {"ranking": ["C", "A", "B"]}

Rules (every rule below is shared by `check`, `is_viable_prefix` and the incremental `State`):

- JSON whitespace (space, tab, \\n, \\r) is allowed wherever JSON allows it: before and after the object and
  around every `{ } [ ] : ,`. Nothing else may precede or follow the object: an EOS marker left in the
  text (e.g. "<|endoftext|>") is trailing text, so decode generations with skip_special_tokens=True.
- Strings are read with JSON semantics, as `json.loads` reads them: escapes (\\" \\\\ \\/ \\b \\f \\n \\r \\t
  \\uXXXX, surrogate pairs included) are decoded before the comparison, so "\\u0041" is the id "A" and
  "r\\u0061nking" is the key. Raw control characters (< U+0020) inside strings are not JSON.
- The object has exactly one member; a repeated key counts as a second member (wrong_shape).

Failure kinds (`Kind`), decided at the first character after which no valid output can follow (the
verdict's `position`), so a text with several problems reports the first one in reading order:
    ok            valid
    truncated     the whole text is a proper prefix of some valid output (this includes "" and whitespace)
    not_json      the text stops being JSON there (prose, a code fence, a bare word, a trailing comma, ...)
    wrong_shape   still JSON, but not {key: [strings]}: another or a second key, an empty object, a list or
                  number where the object or a string belongs; also a comma after all K ids followed by
                  nothing or by a non-string
    unknown_id    a list entry that is no candidate id
    duplicate_id  a list entry that repeats an id already listed
    missing_id    the list closes before all K ids appeared
    trailing_text a valid object followed by anything other than whitespace
An entry that cannot become an unused id is classified by the whole entry (read to its closing quote):
duplicate_id if it is an id already listed (or, cut off, could still become one), unknown_id otherwise; so
with ids "A", "B", the text ["A", "AB"] is unknown_id and ["A", "B", "A"] (after a comma past K) duplicate_id.

`State` is the incremental automaton: `contract.start().feed(text)` returns the state after `text` or None
when no valid output can start with it, so `is_viable_prefix(t) == (start().feed(t) is not None)` and
`check(t).ok == start().feed(t).accepting`, exactly, by construction. States are interned and their
transitions cached per character (a lazily built DFA), so advancing one state by many short token strings
is a few dictionary look-ups per token; contracts over the same id set share one automaton.
The automaton reads text (str), not bytes: a caller testing tokenizer pieces must pass each token's decoded
text (a byte-level token that is only part of a UTF-8 character has no text of its own).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

WS = " \t\n\r"
_VALUE_START = set('"{[-0123456789tfn')  # the characters a JSON value can start with
_SHORT_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}


class Kind(StrEnum):
    OK = "ok"
    TRUNCATED = "truncated"
    NOT_JSON = "not_json"
    WRONG_SHAPE = "wrong_shape"
    UNKNOWN_ID = "unknown_id"
    DUPLICATE_ID = "duplicate_id"
    MISSING_ID = "missing_id"
    TRAILING_TEXT = "trailing_text"


KINDS: tuple[Kind, ...] = tuple(Kind)
_TOO_MANY = "too_many"  # internal: a comma after all K ids; check classifies it by what follows


@dataclass(frozen=True)
class Verdict:
    """The strict check's answer. `ranking` is set iff kind is ok; `position` is the index of the character at
    which the text became invalid (None for ok and truncated)."""

    kind: Kind
    ranking: tuple[str, ...] | None = None
    position: int | None = None

    @property
    def ok(self) -> bool:
        return self.kind is Kind.OK

    def __str__(self) -> str:
        return self.kind.value if self.position is None else f"{self.kind.value} at char {self.position}"


def canonical_json(ids: Sequence[str], key: str = "ranking") -> str:
    """The one canonical serialisation of a ranking, used for targets everywhere:
    json.dumps with its default separators (", ", ": ") and ensure_ascii=False:  {"ranking": ["C", "A"]}"""
    return json.dumps({key: list(ids)}, ensure_ascii=False)


# --------------------------------------------------------------------------------------------- automaton
#
# A state is (mode, used, prefix, esc):
#   mode    start | obj | key | colon | value | list | id | after | comma | close | done
#   used    frozenset of ids already listed (modes list..close), else None
#   prefix  the decoded characters of the string being read (modes key and id), else ""
#   esc     escape progress inside a string: None; "bs" (after a backslash); ("u", n, v) n hex digits of
#           value v read; ("hi", H) a complete high surrogate H; ("hibs", H) then a backslash;
#           ("lo", H, n, v) n hex digits of the low surrogate read.
# Every live state can still be completed to a valid output: string states stay live only while some
# allowed word (the key, or an unused id) can still be spelled, escape states only while some escape
# completion can spell the next character of such a word.


def _unit(c: str) -> int:
    """The first UTF-16 code unit of a character (the high surrogate for characters above U+FFFF)."""
    o = ord(c)
    return o if o < 0x10000 else 0xD800 + ((o - 0x10000) >> 10)


def _low_unit(c: str) -> int:
    return 0xDC00 + ((ord(c) - 0x10000) & 0x3FF)


def _next_chars(words: Iterable[str], prefix: str) -> set[str]:
    n = len(prefix)
    return {w[n] for w in words if len(w) > n and w.startswith(prefix)}


def _escape_can_spell(words: Iterable[str], prefix: str, esc) -> bool:
    """Can the partial escape `esc` still decode to a character that continues `prefix` toward a word?"""
    nxt = _next_chars(words, prefix)
    if esc == "bs":
        return bool(nxt)
    tag = esc[0]
    if tag == "u":
        _, n, v = esc
        span = 16 ** (4 - n)
        return any(v * span <= _unit(c) < (v + 1) * span for c in nxt)
    if tag in ("hi", "hibs"):
        return any(ord(c) >= 0x10000 and _unit(c) == esc[1] for c in nxt)
    _, high, n, v = esc  # "lo"
    span = 16 ** (4 - n)
    return any(ord(c) >= 0x10000 and _unit(c) == high and v * span <= _low_unit(c) < (v + 1) * span
               for c in nxt)


class State:
    """One state of the contract automaton. `feed(text)` advances it; None means dead (no valid output can
    start with the text fed so far). `accepting` is True when the text fed so far is a valid output."""

    __slots__ = ("_auto", "key", "_next", "accepting", "_mask_cache")

    def __init__(self, auto: "_Automaton", key: tuple):
        self._auto, self.key, self._next = auto, key, {}
        self.accepting = key[0] == "done"
        self._mask_cache = None

    def __repr__(self) -> str:
        return f"State{self.key!r}"

    def feed(self, text: str) -> "State | None":
        s = self
        for ch in text:
            nxt = s._next.get(ch)
            if nxt is None:
                nxt = s._step(ch)
            if nxt.__class__ is not State:
                return None
            s = nxt
        return s

    def feed_many(self, texts: Iterable[str]) -> list["State | None"]:
        """`[self.feed(t) for t in texts]`, with the loop inlined."""
        out = []
        for text in texts:
            s = self
            for ch in text:
                nxt = s._next.get(ch)
                if nxt is None:
                    nxt = s._step(ch)
                if nxt.__class__ is not State:
                    s = None
                    break
                s = nxt
            out.append(s)
        return out

    def viable_mask(self, texts: Sequence[str]) -> np.ndarray:
        """Boolean array: which of `texts` (e.g. every token string of a vocabulary) keep this state alive.
        The last result is cached on the state for the identical `texts` object, and states are shared by
        all contracts over the same ids, so asking again at a state seen before is free."""
        cache = self._mask_cache
        if cache is not None and cache[0] is texts:
            return cache[1]
        mask = np.fromiter((s is not None for s in self.feed_many(texts)), dtype=bool, count=len(texts))
        self._mask_cache = (texts, mask)
        return mask

    def _step(self, ch: str):
        """Compute (and cache) the transition on one character: a State, or a failure-kind string."""
        result = self._auto.transition(self.key, ch)
        if result.__class__ is tuple:
            result = self._auto.state(result)
        self._next[ch] = result
        return result


class _Automaton:
    """The lazily built DFA for one (id set, key). Shared between contracts via `_automaton()`."""

    def __init__(self, ids: frozenset[str], key: str):
        self.ids, self.key = ids, key
        self._states: dict[tuple, State] = {}

    def state(self, key: tuple) -> State:
        s = self._states.get(key)
        if s is None:
            s = self._states[key] = State(self, key)
        return s

    def transition(self, st: tuple, ch: str):
        mode, used, prefix, esc = st
        if mode == "key" or mode == "id":
            return self._in_string(mode, used, prefix, esc, ch)
        if ch in WS:
            return st
        if mode == "start":
            if ch == "{":
                return ("obj", None, "", None)
            return Kind.WRONG_SHAPE if ch in _VALUE_START else Kind.NOT_JSON
        if mode == "obj":
            if ch == '"':
                return ("key", None, "", None)
            return Kind.WRONG_SHAPE if ch == "}" else Kind.NOT_JSON
        if mode == "colon":
            return ("value", None, "", None) if ch == ":" else Kind.NOT_JSON
        if mode == "value":
            if ch == "[":
                return ("list", frozenset(), "", None)
            return Kind.WRONG_SHAPE if ch in _VALUE_START else Kind.NOT_JSON
        if mode == "list" or mode == "comma":
            if ch == '"':
                return ("id", used, "", None)
            if ch == "]":
                return Kind.MISSING_ID if mode == "list" else Kind.NOT_JSON  # "[]" vs a trailing comma
            return Kind.WRONG_SHAPE if ch in _VALUE_START else Kind.NOT_JSON
        if mode == "after":
            complete = len(used) == len(self.ids)
            if ch == ",":
                return _TOO_MANY if complete else ("comma", used, "", None)
            if ch == "]":
                return ("close", used, "", None) if complete else Kind.MISSING_ID
            return Kind.NOT_JSON
        if mode == "close":
            if ch == "}":
                return ("done", None, "", None)
            return Kind.WRONG_SHAPE if ch == "," else Kind.NOT_JSON  # a second member
        assert mode == "done", mode
        return Kind.TRAILING_TEXT

    def _words(self, mode, used):
        return (self.key,) if mode == "key" else self.ids - used

    def _reject(self, mode, used, spelled_used: bool):
        if mode == "key":
            return Kind.WRONG_SHAPE
        return Kind.DUPLICATE_ID if spelled_used else Kind.UNKNOWN_ID

    def _in_string(self, mode, used, prefix, esc, ch):
        if esc is None:
            if ch == '"':
                return self._close(mode, used, prefix)
            if ch == "\\":
                return self._escape(mode, used, prefix, "bs")
            if ch < " ":
                return Kind.NOT_JSON
            return self._append(mode, used, prefix + ch)
        if esc == "bs":
            if ch in _SHORT_ESCAPES:
                return self._append(mode, used, prefix + _SHORT_ESCAPES[ch])
            return self._escape(mode, used, prefix, ("u", 0, 0)) if ch == "u" else Kind.NOT_JSON
        tag = esc[0]
        if tag == "u":
            h = _HEX.get(ch)
            if h is None:
                return Kind.NOT_JSON
            n, v = esc[1] + 1, esc[2] * 16 + h
            if n < 4:
                return self._escape(mode, used, prefix, ("u", n, v))
            if 0xD800 <= v <= 0xDBFF:
                return self._escape(mode, used, prefix, ("hi", v))
            return self._append(mode, used, prefix + chr(v))  # a lone low surrogate spells no word
        if tag == "hi":
            # json.loads pairs a high surrogate only with an immediately following \uDC00-\uDFFF; anything
            # else leaves a lone surrogate in the string, which no word contains.
            if ch == "\\":
                return self._escape(mode, used, prefix, ("hibs", esc[1]))
            return Kind.NOT_JSON if ch < " " else self._reject(mode, used, False)
        if tag == "hibs":
            if ch == "u":
                return self._escape(mode, used, prefix, ("lo", esc[1], 0, 0))
            return self._reject(mode, used, False) if ch in _SHORT_ESCAPES else Kind.NOT_JSON
        _, high, n, v = esc  # "lo"
        h = _HEX.get(ch)
        if h is None:
            return Kind.NOT_JSON
        n, v = n + 1, v * 16 + h
        if n < 4:
            return self._escape(mode, used, prefix, ("lo", high, n, v))
        if 0xDC00 <= v <= 0xDFFF:
            return self._append(mode, used, prefix + chr(0x10000 + ((high - 0xD800) << 10) + (v - 0xDC00)))
        return self._reject(mode, used, False)

    def _append(self, mode, used, new_prefix):
        if any(w.startswith(new_prefix) for w in self._words(mode, used)):
            return (mode, used, new_prefix, None)
        return self._reject(mode, used, mode == "id" and any(w.startswith(new_prefix) for w in used))

    def _escape(self, mode, used, prefix, esc):
        if _escape_can_spell(self._words(mode, used), prefix, esc):
            return (mode, used, prefix, esc)
        return self._reject(mode, used, mode == "id" and _escape_can_spell(used, prefix, esc))

    def _close(self, mode, used, prefix):
        if mode == "key":
            return ("colon", None, "", None) if prefix == self.key else Kind.WRONG_SHAPE
        if prefix in self.ids and prefix not in used:
            return ("after", used | {prefix}, "", None)
        return self._reject(mode, used, prefix in used)


@lru_cache(maxsize=256)
def _automaton(ids: frozenset[str], key: str) -> _Automaton:
    return _Automaton(ids, key)


# ----------------------------------------------------------------------------------------------- contract

_QUOTED = re.compile(r'"((?:[^"\\\x00-\x1f]|\\.)*)("?)')


class RankingContract:
    """The contract for one task: `RankingContract(candidate_ids, key="ranking")`.

    Ids must be non-empty, distinct strings without surrogate code points (the task reader is stricter:
    no whitespace, quotes, backslashes or control characters)."""

    def __init__(self, ids: Sequence[str], key: str = "ranking"):
        ids = tuple(ids)
        if not ids:
            raise ValueError("a ranking contract needs at least one candidate id")
        for x in (*ids, key):
            if not isinstance(x, str) or not x:
                raise ValueError(f"ids and key must be non-empty strings, got {x!r}")
            if any(0xD800 <= ord(c) <= 0xDFFF for c in x):
                raise ValueError(f"ids and key must not contain surrogate code points: {x!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate candidate ids: {ids!r}")
        self.ids, self.key = ids, key
        self._auto = _automaton(frozenset(ids), key)

    @classmethod
    def for_task(cls, task, key: str = "ranking") -> "RankingContract":
        return cls(task.candidate_ids, key)

    def __repr__(self) -> str:
        return f"RankingContract({list(self.ids)!r}, key={self.key!r})"

    # -- incremental -------------------------------------------------------------------------------------
    def start(self) -> State:
        """The state before any text: feed it text (e.g. one token string at a time)."""
        return self._auto.state(("start", None, "", None))

    def is_viable_prefix(self, prefix: str) -> bool:
        """True iff some continuation of `prefix` is a valid output (valid outputs included)."""
        return self.start().feed(prefix) is not None

    # -- strict check ------------------------------------------------------------------------------------
    def check(self, text: str) -> Verdict:
        """Strict verdict on a complete output. Never raises on a str."""
        if not isinstance(text, str):
            raise TypeError(f"check() takes a str, got {type(text).__name__}")
        s = self.start()
        entry_start = 0  # where the list entry being read opened its quote
        for pos, ch in enumerate(text):
            nxt = s._next.get(ch)
            if nxt is None:
                nxt = s._step(ch)
            if nxt.__class__ is not State:
                return Verdict(self._classify(text, pos, nxt, s, entry_start), position=pos)
            if ch == '"' and (s.key[0] == "list" or s.key[0] == "comma"):
                entry_start = pos
            s = nxt
        if not s.accepting:
            return Verdict(Kind.TRUNCATED)
        value = json.loads(text)[self.key]  # the automaton accepted it, so json agrees (property-tested)
        return Verdict(Kind.OK, ranking=tuple(value))

    def _classify(self, text: str, pos: int, kind: str, state: State, entry_start: int) -> Kind:
        """Refine the kind at the fatal character by the whole list entry it belongs to: inside an entry
        (ids "A", "B"; text ["A", "AB"]) the death point cannot tell a repeat of "A" from the unknown "AB"."""
        if kind == _TOO_MANY:  # a comma after all K ids: classify by what follows it
            rest = len(text) - len(text[pos + 1:].lstrip(WS))
            if rest == len(text):
                return Kind.WRONG_SHAPE
            if text[rest] == "]":
                return Kind.NOT_JSON
            if text[rest] != '"':
                return Kind.WRONG_SHAPE if text[rest] in _VALUE_START else Kind.NOT_JSON
            return self._entry_kind(text, rest) or Kind.UNKNOWN_ID
        if state.key[0] == "id" and kind in (Kind.UNKNOWN_ID, Kind.DUPLICATE_ID):
            return self._entry_kind(text, entry_start) or Kind(kind)
        return Kind(kind)

    def _entry_kind(self, text: str, start: int) -> Kind | None:
        """duplicate_id if the string literal at `start` is (or, unterminated, can still become) an id,
        unknown_id if not, None if it does not decode."""
        m = _QUOTED.match(text, start)
        try:
            entry = json.loads(f'"{m.group(1)}"')
        except ValueError:
            return None
        if m.group(2) == '"':
            known = entry in self.ids
        else:
            known = any(i.startswith(entry) for i in self.ids)
        return Kind.DUPLICATE_ID if known else Kind.UNKNOWN_ID

    def canonical(self, ranking: Sequence[str]) -> str:
        return canonical_json(ranking, self.key)

    # -- lenient repair ----------------------------------------------------------------------------------
    def repair(self, text: str) -> list[str] | None:
        """Lenient repair (for the "repaired" metrics only; never for the strict ones).

        1. If the text is strictly valid, its ranking.
        2. Otherwise the entries are read from the first source that names at least one known id:
           a. the first JSON value in the text that starts at a '{' or '[' and parses: an object's `key`
              member if that is a list, or the list itself (string items only);
           b. every double-quoted string in the text, in order (JSON-decoded when possible; an unterminated
              last string is dropped) - this recovers truncated and slightly broken JSON;
           c. every whole-word occurrence of a known id (not touching a letter, digit or '_'), e.g.
              "C > A > B" or "[C] [A]".
        3. Keep known ids in order of first appearance, drop unknown ids and duplicates, then append the
           ids that are still missing in candidate order.
        Returns None when no source names a known id (then the repaired metrics score 0)."""
        if not isinstance(text, str):
            raise TypeError(f"repair() takes a str, got {type(text).__name__}")
        v = self.check(text)
        if v.ok:
            return list(v.ranking)
        for entries in (self._json_entries(text), self._quoted_entries(text), self._word_entries(text)):
            found = self._keep_known(entries)
            if found:
                seen = set(found)
                return found + [i for i in self.ids if i not in seen]
        return None

    def _keep_known(self, entries: Iterable) -> list[str]:
        known, out, seen = set(self.ids), [], set()
        for e in entries:
            if isinstance(e, str) and e in known and e not in seen:
                seen.add(e)
                out.append(e)
        return out

    def _json_entries(self, text: str, max_tries: int = 64) -> list:
        decoder = json.JSONDecoder()
        tries = 0
        for m in re.finditer(r"[{\[]", text):
            tries += 1
            if tries > max_tries:
                break
            try:
                value, _ = decoder.raw_decode(text, m.start())
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                value = value.get(self.key)
            if isinstance(value, list) and self._keep_known(value):
                return value
        return []

    @staticmethod
    def _quoted_entries(text: str) -> list[str]:
        out = []
        for m in _QUOTED.finditer(text):
            if m.group(2) != '"':
                continue
            try:
                out.append(json.loads(f'"{m.group(1)}"'))
            except ValueError:
                out.append(m.group(1))
        return out

    def _word_entries(self, text: str) -> list[str]:
        alternatives = "|".join(re.escape(i) for i in sorted(self.ids, key=len, reverse=True))
        pattern = re.compile(rf"(?<![0-9A-Za-z_])(?:{alternatives})(?![0-9A-Za-z_])")
        return pattern.findall(text)
