"""The listwise task record: a context, K candidates with short ids, graded relevance per id, a split.

One JSONL line per task:

    {"id": "u42", "split": "train", "context": "...",
     "candidates": [{"id": "A", "text": "..."}, ...],
     "relevance": {"A": 2, "B": 0, ...}}

Reading and validation (file, line and field named for every problem) live below the dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Candidate:
    id: str
    text: str


@dataclass(frozen=True)
class Task:
    id: str
    context: str
    candidates: tuple[Candidate, ...]
    relevance: dict[str, float]
    split: str = "train"
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.candidates)

    @property
    def candidate_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.candidates)

    def to_dict(self) -> dict:
        d = {
            "id": self.id,
            "split": self.split,
            "context": self.context,
            "candidates": [{"id": c.id, "text": c.text} for c in self.candidates],
            "relevance": dict(self.relevance),
        }
        if self.meta:
            d["meta"] = dict(self.meta)
        return d
